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
