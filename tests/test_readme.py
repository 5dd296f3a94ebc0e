"""Every command in README.md runs here, in order, on a tiny configuration.

Commands come from ```bash blocks (`lmforge ...` and `torchrun ... -m lmforge ...`; `pip` and
`pytest` are skipped; `echo TEXT | lmforge ...` feeds TEXT on stdin; `$(python -c 'CODE')`
is expanded as the shell would; `lmforge serve ... --port P &` starts a server in the
background, on a free port that replaces the README's P everywhere, for the `curl` commands and
the python blocks after it) and the ```python blocks
are executed. Tiny settings are appended per verb (argparse keeps the last value);
`--max-steps N` and `--stop-after N` become N // 1000 so the README's "train 3000 steps, stop
after 2000, then resume" stays a valid sequence; in ```python blocks `max_steps=N` becomes 2 and `max_new_tokens=N` 8.
The ```jsonl block is the chat file `my_chats.jsonl`. A README command that fails here fails
the suite, so the README cannot rot.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import corpus_text, write_pairs_tsv, write_topics_csv

README = Path(__file__).resolve().parents[1] / "README.md"

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
    "embed": ["--device", "cpu"],
    "serve": ["--device", "cpu"],
    "attention": ["--device", "cpu"],
}


def readme_blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(), flags=re.S)


def readme_commands() -> list[tuple[list[str], str | None]]:
    """(argv, text for stdin or None) of every command, in order."""
    commands = []
    for block in readme_blocks("bash"):
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
    """What `$(python -c 'CODE')` expands to in the shell (the README quotes it)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def shrink(argv: list[str]) -> list[str]:
    argv = list(argv)
    for flag in ("--max-steps", "--stop-after"):
        if flag in argv:
            i = argv.index(flag) + 1
            argv[i] = str(max(1, int(argv[i]) // 1000))
    verb = argv[argv.index("lmforge") + 1] if argv[0] == "torchrun" else argv[1]
    return argv + TINY.get(verb, [])


def test_readme_has_the_two_setup_commands():
    setup = readme_blocks("bash")[0]
    assert "pip install -e . && lmforge quickstart" in setup
    assert re.search(r'pip install -e "\.\[test\]" && python -m pytest\s+# run the tests', setup)
    ci = (README.parent / ".ci" / "run").read_text()
    readme_line = re.search(r"^(.*?)\s*# run the tests$", setup, flags=re.M)[1]
    ci_line = re.search(r"^(.*?)\s*# run the tests$", ci, flags=re.M)[1]
    assert ci_line == readme_line == 'pip install -e ".[test]" && python -m pytest'   # CI runs the README's command


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("my_corpus.txt").write_text(corpus_text(), encoding="utf-8")
    Path("my_chats.jsonl").write_text(readme_blocks("jsonl")[0], encoding="utf-8")
    write_topics_csv(Path("my_labels.csv"))        # text,label rows
    write_pairs_tsv(Path("my_pairs.tsv"))          # en<TAB>zh rows
    commands = readme_commands()
    assert len(commands) >= 8
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ports: dict[str, str] = {}              # the README's port -> a free one here
    servers: list[subprocess.Popen] = []
    try:
        _run_commands(commands, env, ports, servers, monkeypatch)
        for code in readme_blocks("python"):
            code = re.sub(r"max_steps=\d+", "max_steps=2", code)
            code = re.sub(r"max_new_tokens=\d+", "max_new_tokens=8", code)     # fits the tiny 32-token context
            exec(compile(_local_ports(code, ports), "README.md", "exec"), {})
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
    """`lmforge serve ... &`: a background server; returns once /health answers."""
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


def _run_commands(commands, env: dict, ports: dict[str, str], servers: list, monkeypatch) -> None:
    from lmforge.cli import main
    for argv, stdin in commands:
        for prev, a in zip([""] + argv, argv):
            if prev == "--port" and a not in ports:
                ports[a] = str(_free_port())
        argv = [ports[a] if prev == "--port" else _local_ports(a, ports) for prev, a in zip([""] + argv, argv)]
        if argv[-1] == "&":
            servers.append(_start_server(shrink(argv[:-1]), env, argv[argv.index("--port") + 1]))
            continue
        if argv[0] == "curl":
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0 and '"error"' not in done.stdout, f"{shlex.join(argv)}\n{done.stdout}"
            continue
        argv = shrink(argv)
        if argv[0] == "torchrun":
            cmd = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stderr[-3000:]}"
        else:
            if stdin is not None:
                monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
            assert main(argv[1:]) == 0, shlex.join(argv)
