"""The documentation cannot rot: every example of README.md and of the pages in docs/ runs here,
the site builds with `mkdocs build --strict`, and the code map follows the import-linter contract.

The examples run as one session in one temporary directory, in reading order: README.md, then
the pages in the order of mkdocs.yml's nav, each page's blocks from top to bottom. A page may use
what an earlier example made (`runs/quickstart` from the README's set-up block, `runs/bert` from
the training page, ...). A command or python block that appeared earlier — the README's tour
shows commands that the pages show again — runs once, where it first appears: the later copy is
the same step (and could not run twice anyway, since an output directory that holds something
is refused).

From ```bash blocks: `lmforge ...`, `torchrun ... -m lmforge ...` and `curl ...` run; `pip`
and `python` scripts (benchmarks, examples: minutes long) do not. `echo TEXT | lmforge ...`
feeds TEXT on stdin; `$(python -c 'CODE')` is expanded as the shell would; `lmforge serve ...
--port P &` (or `lmforge runs ... --port P &`: both answer /health) starts a server in the
background, on a free port that replaces P everywhere after it (the `curl` commands and the
python blocks). ```python blocks are executed. Tiny settings are
appended per verb (argparse keeps the last value); `--max-steps N` and `--stop-after N` become
N // 1000 so "train 3000 steps, stop after 2000, then resume" stays a valid sequence, and
`--epochs E` becomes E / 100; in ```python blocks `max_steps=N` becomes 2 and `max_new_tokens=N`
8. The first ```jsonl block is the chat file `my_chats.jsonl`; `my_corpus.txt`, `my_labels.csv`
and `my_pairs.tsv` are made here. Fences of other languages (```text, ```sh, plain ```) are shown, not run.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from .conftest import corpus_text, write_pairs_tsv, write_topics_csv

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.M | re.S)
RUN = ("bash", "python")

# appended to every command of that verb
TINY: dict[str, list[str]] = {
    "quickstart": ["--max-steps", "3", "--eval-interval", "3", "--context-length", "64", "--batch-size", "4",
                   "--vocab-size", "300", "--no-progress"],
    "prepare": ["--no-progress", "--vocab-size", "300"],
    "train": ["--context-length", "32", "--batch-size", "4", "--eval-iters", "1", "--no-progress",
              "--sample-tokens", "8", "--device", "cpu", "--eval-translations", "4", "--test-beams", "2"],
    "finetune": ["--batch-size", "4", "--eval-iters", "1", "--no-progress", "--device", "cpu"],
    "generate": ["--max-new-tokens", "8", "--device", "cpu"],
    "eval": ["--stride", "16", "--device", "cpu"],
    "score": ["--device", "cpu"],
    "import": ["--no-progress"],
    "export": ["--no-progress"],
    "chat": ["--max-new-tokens", "8", "--device", "cpu"],
    "quantize": ["--report-tokens", "8"],
    "distill": ["--context-length", "32", "--batch-size", "4", "--eval-iters", "1", "--no-progress",
                "--sample-tokens", "8", "--device", "cpu"],
    "classify": ["--device", "cpu"],
    "translate": ["--device", "cpu", "--max-new-tokens", "8"],
    "summarize": ["--device", "cpu", "--max-new-tokens", "8"],
    "embed": ["--device", "cpu"],
    "serve": ["--device", "cpu"],
    "attention": ["--device", "cpu"],
    "inspect": ["--device", "cpu"],
}


# ---- the pages and their blocks ------------------------------------------------------------------------
def nav_files(nav) -> list[str]:
    """The page files of mkdocs.yml's nav, in order (entries are `file`, `{title: file}` or `{title: [...]}`)."""
    files = []
    for entry in nav:
        for item in entry.values() if isinstance(entry, dict) else [entry]:
            files += nav_files(item) if isinstance(item, list) else [item]
    return files


def doc_pages() -> list[Path]:
    """README.md, then every page of docs/ in the nav's order: the order the examples run in."""
    nav = nav_files(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    on_disk = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert sorted(nav) == on_disk, f"mkdocs.yml's nav must list every page of docs/: nav {nav}, on disk {on_disk}"
    return [ROOT / "README.md", *(ROOT / "docs" / name for name in nav)]


def fenced_blocks(page: Path) -> list[tuple[str, str]]:
    """(language, body) of every fenced block of a page, in order."""
    return FENCE.findall(page.read_text(encoding="utf-8"))


def parse_bash(block: str) -> list[tuple[list[str], str | None]]:
    """(argv, text for stdin or None) of every command of a ```bash block that runs here, in order."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\$\(python -c '([^']*)'\)", lambda m: python_output(m[1]), line)
        for part in line.split("&&"):
            argv, stdin = shlex.split(part, comments=True), None
            if argv[:1] == ["echo"] and "|" in argv:                 # echo TEXT | lmforge ...
                pipe = argv.index("|")
                argv, stdin = argv[pipe + 1:], " ".join(argv[1:pipe]) + "\n"
            if argv and argv[0] in ("lmforge", "torchrun", "curl"):
                commands.append((argv, stdin))
    return commands


def python_output(code: str) -> str:
    """What `$(python -c 'CODE')` expands to in the shell (the pages quote it)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def doc_steps() -> list[tuple[str, object, str]]:
    """Every example to run, in reading order, each once: ("command", (argv, stdin), where) or
    ("python", code, where). A copy of an earlier example is left out (see the module docstring)."""
    steps, seen = [], set()
    for page in doc_pages():
        for kind, body in fenced_blocks(page):
            examples = parse_bash(body) if kind == "bash" else [body] if kind == "python" else []
            for example in examples:
                key = (kind, repr(example))
                if key not in seen:
                    seen.add(key)
                    steps.append(("command" if kind == "bash" else "python", example, page.name))
    return steps


def test_every_example_is_where_the_tests_see_it():
    """A ```bash or ```python fence indented (in a list, an admonition) would not be found by FENCE."""
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        hidden = re.findall(r"^[ \t]+```(?:bash|python)\b.*$", text, flags=re.M)
        assert not hidden, f"{page.name}: indented example fences are not run by the tests: {hidden}"
        opened = re.findall(r"^```(\w*)$", text, flags=re.M)
        assert len(opened) % 2 == 0, f"{page.name}: an unclosed ``` fence"
    steps = doc_steps()
    assert sum(kind == "command" for kind, _, _ in steps) >= 60
    assert sum(kind == "python" for kind, _, _ in steps) >= 5


# ---- the site ------------------------------------------------------------------------------------------
def test_mkdocs_build_strict(tmp_path):
    """The site builds with no warning: every page in the nav, every link and anchor resolves."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "playground.png").is_file()


# ---- the code map --------------------------------------------------------------------------------------
def contract_layers() -> list[list[str]]:
    """The layers of the import-linter contract on the package `lmforge`, top to bottom, each the
    list of its sibling modules (`a | b` independent, `a : b` not; `(a)` an optional layer)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c.get("containers") == ["lmforge"])
    assert contract["type"] == "layers" and contract.get("exhaustive"), \
        "the top-level contract must be an exhaustive layers contract (so the code map covers every module)"
    return [[name.strip().strip("()") for name in re.split(r"[|:]", layer)] for layer in contract["layers"]]


def code_map_rows() -> list[tuple[list[str], str]]:
    """(names in the first cell, the 'owns' cell) of each row of docs/development.md's code map."""
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    section = re.search(r"^## Code map\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert section, "docs/development.md has no '## Code map' section"
    rows = []
    for line in section[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1] if len(cells) > 1 else ""))
    return rows


def test_code_map_follows_the_import_linter_contract():
    """One row per layer of the contract, in its order, naming exactly that layer's modules, spelled
    as they are on disk (`name/` a package, `name.py` a module): a new, moved or renamed module
    fails here until its row is written."""
    layers, rows = contract_layers(), code_map_rows()
    table = [[name.removesuffix("/").removesuffix(".py") for name in names] for names, _ in rows]
    assert table == layers, ("docs/development.md's code map must list the layers of the contract in "
                             f"pyproject.toml, top to bottom, one row each:\n contract {layers}\n code map {table}")
    for names, owns in rows:
        for name in names:
            path = ROOT / "lmforge" / name.removesuffix("/")
            assert (path.is_dir() if name.endswith("/") else name.endswith(".py") and path.is_file()), \
                f"code map: `{name}` is not how lmforge/ spells it (a package is `name/`, a module `name.py`)"
        assert owns, f"code map: the row of {names} says nothing about what it owns"


# ---- the examples --------------------------------------------------------------------------------------
def shrink(argv: list[str]) -> list[str]:
    argv = list(argv)
    for flag in ("--max-steps", "--stop-after"):
        if flag in argv:
            i = argv.index(flag) + 1
            argv[i] = str(max(1, int(argv[i]) // 1000))
    if "--epochs" in argv:
        i = argv.index("--epochs") + 1
        argv[i] = str(float(argv[i]) / 100)
    verb = argv[argv.index("lmforge") + 1] if argv[0] == "torchrun" else argv[1]
    return argv + TINY.get(verb, [])


def first_block(language: str) -> str:
    return next(body for page in doc_pages() for kind, body in fenced_blocks(page) if kind == language)


@pytest.mark.slow
def test_every_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("my_corpus.txt").write_text(corpus_text(), encoding="utf-8")
    Path("my_chats.jsonl").write_text(first_block("jsonl"), encoding="utf-8")
    write_topics_csv(Path("my_labels.csv"))        # text,label rows
    write_pairs_tsv(Path("my_pairs.tsv"))          # en<TAB>zh rows
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ports: dict[str, str] = {}              # the pages' port -> a free one here
    servers: list[subprocess.Popen] = []
    try:
        for kind, example, where in doc_steps():
            try:
                if kind == "command":
                    _run_command(*example, env, ports, servers, monkeypatch)
                else:
                    code = re.sub(r"max_steps=\d+", "max_steps=2", example)
                    code = re.sub(r"max_new_tokens=\d+", "max_new_tokens=8", code)  # fits the tiny 32-token context
                    exec(compile(_local_ports(code, ports), where, "exec"), {})
            except BaseException as error:
                error.add_note(f"(an example of {where})")
                raise
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(argv: list[str], env: dict, port: str) -> subprocess.Popen:
    """`lmforge serve ... &` or `lmforge runs ... &`: a background server; returns once /health answers."""
    import time
    import urllib.request
    server = subprocess.Popen([sys.executable, "-m", "lmforge", *argv[1:]], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        assert server.poll() is None, f"{shlex.join(argv)} exited: {server.stderr.read()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise AssertionError(f"{shlex.join(argv)} did not answer /health within 120 s")


def _local_ports(text: str, ports: dict[str, str]) -> str:
    for theirs, ours in ports.items():
        text = text.replace(f"127.0.0.1:{theirs}", f"127.0.0.1:{ours}")
    return text


def _run_command(argv: list[str], stdin: str | None, env: dict, ports: dict[str, str], servers: list,
                 monkeypatch) -> None:
    from lmforge.cli import main
    for prev, a in zip([""] + argv, argv):
        if prev == "--port" and a not in ports:
            ports[a] = str(_free_port())
    argv = [ports[a] if prev == "--port" else _local_ports(a, ports) for prev, a in zip([""] + argv, argv)]
    if argv[-1] == "&":
        servers.append(_start_server(shrink(argv[:-1]), env, argv[argv.index("--port") + 1]))
        return
    if argv[0] == "curl":
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and '"error"' not in done.stdout, f"{shlex.join(argv)}\n{done.stdout}"
        return
    argv = shrink(argv)
    if argv[0] == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stderr[-3000:]}"
    else:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        assert main(argv[1:]) == 0, shlex.join(argv)
