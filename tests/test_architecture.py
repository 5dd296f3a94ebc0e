"""The structure holds itself: layers only point down (import-linter), and every docstring
example runs."""

import doctest
import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lmforge

ROOT = Path(__file__).resolve().parents[1]


def test_layers_only_point_down():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    r = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "broken" not in r.stdout.split("Contracts:")[-1].replace("0 broken", "")


def test_a_cycle_breaks_the_contract(tmp_path):
    """The contract is not vacuous: a copy of the package where `config` imports the model fails."""
    copy = tmp_path / "lmforge"
    shutil.copytree(ROOT / "lmforge", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "config.py").write_text((copy / "config.py").read_text() + "\nfrom .model import build_model  # noqa\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    r = subprocess.run([exe], cwd=tmp_path, capture_output=True, text=True,
                       env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode != 0 and "lmforge.config is not allowed to import lmforge.model" in r.stdout


def _modules():
    for info in pkgutil.walk_packages(lmforge.__path__, "lmforge."):
        if not info.name.endswith("__main__"):
            yield info.name


@pytest.mark.parametrize("name", sorted(_modules()))
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


def test_no_import_cycle_of_any_length():
    """No cycle among lmforge's modules, packages' `__init__` included (the layers contract does
    not see a package importing its own modules); imports inside functions count too."""
    import grimp
    graph = grimp.build_graph("lmforge")
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    order, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):                                   # Tarjan's strongly connected components
        order[v] = low[v] = len(order)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1 or v in edges[v]:
                cycles.append(sorted(component))
    for module in sorted(edges):
        if module not in order:
            visit(module)
    assert cycles == []


MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def test_modules_and_functions_stay_short():
    """Every module of the package is under 400 lines and every function under 60, so that each
    can be read at once."""
    import ast
    long_files, long_functions = [], []
    for path in sorted((ROOT / "lmforge").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if text.count("\n") > MAX_FILE_LINES:
            long_files.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert long_files == [] and long_functions == []


def test_option_classes_have_one_suffix():
    """Every dataclass whose fields are options (flags, run-file keys, API keywords) is a `...Config`."""
    import dataclasses
    names = set()
    for module_name in sorted(_modules()):
        for obj in vars(importlib.import_module(module_name)).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__.startswith("lmforge") \
                    and any("help" in f.metadata or "nested" in f.metadata for f in dataclasses.fields(obj)):
                names.add(obj.__name__)
    assert len(names) >= 20 and [n for n in sorted(names) if not n.endswith("Config")] == []
