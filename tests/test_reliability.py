"""Never lose a model, resume exactly after any stop, one clear line for every mistake, paths
that stay put: one test per class of failure (issue 15)."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.errors import ConfigError, DataError, ModelDirError
from lmforge.safety import check_output, confined, staged_output
from lmforge.train import train
from lmforge.train.checkpoint import checkpoint_step

from .conftest import tiny_train_config


def digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def logged(run: Path) -> dict:
    """{(kind, step): loss / val_loss / text}; asserts every (kind, step) appears once."""
    out = {}
    for r in rows(run):
        key = (r["kind"], r["step"])
        assert key not in out, f"{key} logged twice in {run}"
        out[key] = r.get("loss", r.get("val_loss", r.get("text")))
    return out


def one_line_error(capsys, argv: list[str], match: str = "") -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lmforge {argv[0]}: error: ") and "\n" not in err and "Traceback" not in err, err
    assert match in err, err
    return err


# ------------------------------------------------------------------------------ the output rule
def test_staged_output_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_output(out) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("disk full")
    assert not out.exists() and list(tmp_path.iterdir()) == []            # nothing half-made, no partial left
    with staged_output(out) as tmp:
        (tmp / "config.json").write_text("{}")
        assert not out.exists()                                            # invisible until complete
    assert (out / "config.json").is_file() and list(tmp_path.iterdir()) == [out]
    with pytest.raises(ConfigError, match="already holds a model.*--overwrite"):
        with staged_output(out):
            pass
    with staged_output(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]           # replaced as a whole


def test_a_killed_writers_partial_directory_is_cleaned_on_the_next_run(tmp_path):
    stale = tmp_path / ".out.partial-999999"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    with staged_output(tmp_path / "out") as tmp:
        (tmp / "a").write_text("a")
    assert not stale.exists() and (tmp_path / "out" / "a").is_file()


def test_an_output_is_never_an_input_even_with_overwrite(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "link").symlink_to(model)
    inputs = [("MODEL_DIR", model)]
    for out in (model, f"{model}/", tmp_path / "link", tmp_path / "link" / ".", model / "sub", tmp_path):
        with pytest.raises(ConfigError, match="would destroy an input"):
            check_output(out, inputs=inputs, overwrite=True)
    with pytest.raises(ConfigError, match="is a file"):
        check_output(model / "config.json" / "x")
    check_output(tmp_path / "new", inputs=inputs)                           # a new sibling is fine


def test_verbs_refuse_to_write_over_models_and_inputs(tmp_path, capsys, tiny_model_dir, char_data, corpus_file):
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    before = digest(other), digest(tiny_model_dir)
    cases = [
        (["quantize", tiny_model_dir, other], "already holds a model"),
        (["quantize", other, other], "is MODEL_DIR"),
        (["export", other, other, "--overwrite", "--no-progress"], "would destroy an input"),
        (["prepare", corpus_file, "--out", other, "--tokenizer", "char", "--no-progress"], "already holds a model"),
        (["prepare", corpus_file, "--out", corpus_file.parent, "--no-progress"], "contains the input"),
        (["train", "--data", char_data, "--out", other, "--preset", "gpt-tiny"], "already holds a trained model"),
        (["train", "--data", char_data, "--out", char_data, "--preset", "gpt-tiny"], "is --data"),
        (["finetune", other, "--data", char_data, "--out", other], "is --init-from"),
        (["merge-lora", other, tmp_path / "m"], "holds no LoRA adapters"),
    ]
    for argv, match in cases:
        one_line_error(capsys, argv, match)
    assert (digest(other), digest(tiny_model_dir)) == before
    assert main(["quantize", str(tiny_model_dir), str(other), "--overwrite"]) == 0      # --overwrite replaces it
    assert json.loads((other / "config.json").read_text())["quantization"]["bits"] == 8


def test_quickstart_never_replaces_what_it_did_not_make(tmp_path, capsys, tiny_model_dir, char_data):
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    before = digest(model)
    one_line_error(capsys, ["quickstart", "--data", model, "--out", tmp_path / "q"], "quickstart did not make")
    one_line_error(capsys, ["quickstart", "--out", model, "--data", tmp_path / "d"], "quickstart did not make")
    assert digest(model) == before and not (tmp_path / "d").exists()


def test_fresh_run_over_a_never_checkpointed_run_starts_a_fresh_metrics_file(tmp_path, char_data):
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_config.yaml").write_text("{}\n")                     # a run killed before its first checkpoint
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 9.0}\n{"kind": "tr')
    (out / ".model.safetensors.abc.tmp").write_bytes(b"half")
    train(tiny_train_config(char_data, out, max_steps=3, eval_interval=3))
    assert [r["step"] for r in rows(out) if r["kind"] == "train"] == [1, 2, 3]
    assert rows(out)[0]["loss"] != 9.0 and not list(out.glob("*.tmp"))


# ------------------------------------------------------------------------------ the run lock
def test_a_second_writer_is_refused_with_the_first_ones_pid(tmp_path, char_data, capsys):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from lmforge.safety import RunLock; "
                               f"RunLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line_error(capsys, ["train", "--data", char_data, "--out", out, "--preset", "gpt-tiny"],
                       f"PID {holder.pid}")
        with pytest.raises(ConfigError, match=f"another lmforge process \\(PID {holder.pid}\\)"):
            with staged_output(out, overwrite=True):
                pass
    finally:
        holder.kill()                                       # kill -9: no cleanup runs in the holder
        holder.wait()
    train(tiny_train_config(char_data, out, max_steps=2, eval_interval=2))   # the lock died with its process


# ------------------------------------------------------------------------------ exact resume
class Interrupter:
    """Wraps a task's objective and sends this process SIGINT (or `sig`) from inside a step — while
    collating a micro-batch, computing the loss or evaluating — at a chosen step."""

    def __init__(self, at_step: int, where: str, count: int = 1, sig: int = signal.SIGINT):
        self.at_step, self.where, self.count, self.sig, self.step = at_step, where, count, sig, 0

    def wrap(self, inner, config, tokenizer):
        outer = self

        class Wrapped(type(inner)):
            def __init__(self):
                self.__dict__.update(inner.__dict__)

            def sample(self, split, n, gen):
                if split == "train":
                    outer.step += 1
                return super().sample(split, n, gen)

            def collate(self, split, idx):
                outer.maybe("collate" if split == "train" else "eval")
                return super().collate(split, idx)

            def loss(self, model, batch):
                outer.maybe("loss")
                return super().loss(model, batch)
        return Wrapped()

    def maybe(self, where: str) -> None:
        if self.step == self.at_step and where == self.where and self.count > 0:
            self.count -= 1
            os.kill(os.getpid(), self.sig)


RESUME_RUN = dict(max_steps=12, eval_interval=4, save_interval=4, dropout=0.1, grad_accum=2, log_interval=1)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, char_data) -> dict:
    """What an uninterrupted run of RESUME_RUN logs: every stopped-and-resumed run must equal it."""
    out = tmp_path_factory.mktemp("ref") / "run"
    train(tiny_train_config(char_data, out, **RESUME_RUN))
    return logged(out)


def test_sigint_at_random_points_mid_step_resumes_exactly(tmp_path, char_data, reference_run):
    run, rng, step = tmp_path / "run", random.Random(15), 0
    for at in sorted(rng.sample(range(1, 12), 3)) + [None]:
        where = rng.choice(["collate", "loss", "eval"] if at and at % 4 == 0 else ["collate", "loss"])
        hit = Interrupter(at - step if at else -1, where)
        summary = train(tiny_train_config(char_data, run, resume=step > 0, **RESUME_RUN), wrap_task=hit.wrap)
        if at is None:
            assert not summary["stopped"] and summary["step"] == 12
            break
        assert summary["stopped"] and summary["step"] == at and checkpoint_step(run) == at, (at, where)
        step = at
    assert logged(run) == reference_run


def test_a_second_sigint_stops_at_once_and_the_last_checkpoint_resumes_exactly(tmp_path, char_data, reference_run):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):                # both signals inside step 6 (two micro-batches)
        train(tiny_train_config(char_data, run, **RESUME_RUN), wrap_task=Interrupter(6, "loss", count=2).wrap)
    assert checkpoint_step(run) == 4 and max(r["step"] for r in rows(run)) == 5   # step 5 was logged after it
    train(tiny_train_config(char_data, run, resume=True, **RESUME_RUN))
    assert logged(run) == reference_run


def test_kill_9_mid_step_then_resume_logs_each_step_once_and_exactly(tmp_path, char_data, reference_run):
    run = tmp_path / "run"
    code = ("import os, signal\nfrom lmforge.train import train\nfrom tests.conftest import tiny_train_config\n"
            "from tests.test_reliability import RESUME_RUN, Interrupter\n"
            "hit = Interrupter(7, 'loss', sig=signal.SIGKILL)\n"
            f"train(tiny_train_config({str(char_data)!r}, {str(run)!r}, **RESUME_RUN), wrap_task=hit.wrap)\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode == -signal.SIGKILL
    assert checkpoint_step(run) == 4 and max(r["step"] for r in rows(run)) == 6
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "st')                                  # a line torn by the kill
    (run / "train_state" / ".step-00000008.pt.x1.tmp").write_bytes(b"half")   # a write the kill cut short
    with pytest.warns(UserWarning, match="torn line"):
        train(tiny_train_config(char_data, run, resume=True, **RESUME_RUN))
    assert logged(run) == reference_run and not list(run.rglob("*.tmp"))


def test_a_full_disk_during_a_checkpoint_resumes_exactly(tmp_path, char_data, reference_run, monkeypatch):
    ckpt = sys.modules["lmforge.train.checkpoint"]
    run, real = tmp_path / "run", ckpt.save_tensors

    def full(tensors, path, metadata=None):
        if metadata and metadata.get("step") == "8":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(tensors, path, metadata)
    monkeypatch.setattr(ckpt, "save_tensors", full)
    with pytest.raises(OSError, match="No space left"):
        train(tiny_train_config(char_data, run, **RESUME_RUN))
    monkeypatch.undo()
    assert checkpoint_step(run) == 4
    train(tiny_train_config(char_data, run, resume=True, **RESUME_RUN))
    assert logged(run) == reference_run


def test_prepare_on_a_full_disk_leaves_nothing_behind(tmp_path, corpus_file):
    code = ("import resource, sys; from lmforge.cli import main\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))\n"
            f"sys.exit(main(['prepare', {str(corpus_file)!r}, '--out', {str(tmp_path / 'd')!r}, "
            "'--tokenizer', 'char', '--no-progress']))\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "no space left" in r.stderr.lower() and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []                       # no half directory, no train.bin.tmp


def test_resume_refuses_data_prepared_with_another_tokenizer(tmp_path, char_data, bpe_data, capsys):
    out = tmp_path / "run"
    train(tiny_train_config(char_data, out, max_steps=6, stop_after=2))
    before = digest(out)
    one_line_error(capsys, ["train", "--data", bpe_data, "--out", out, "--preset", "gpt-tiny", "--max-steps", "6",
                            "--resume"], "another tokenizer")
    assert digest(out) == before


def test_an_unreadable_train_state_is_one_line(tmp_path, char_data, capsys):
    out = tmp_path / "run"
    train(tiny_train_config(char_data, out, max_steps=6, stop_after=2))
    for pt in (out / "train_state").glob("*.pt"):
        os.truncate(pt, 100)
    one_line_error(capsys, ["train", "--data", char_data, "--out", out, "--preset", "gpt-tiny", "--resume",
                            "--max-steps", "6"], "--init-from")


# ------------------------------------------------------------------------------ flags and files
@pytest.mark.parametrize("argv, match", [
    (["train", "--beta1", "2"], "beta1=2.0 must be in [0, 1)"),
    (["train", "--device", "tpu"], "is not a device"),
    (["train", "--min-lr", "5"], "min_lr=5.0 is above lr=0.001"),
    (["train", "--stop-after", "-1"], "stop_after=-1 must be at least 1"),
    (["train", "--warmup-steps", "-5"], "warmup_steps=-5"),
    (["train", "--lr", "nan"], "must be a finite number"),
    (["train", "--objective", "seq2seq", "--test-beams", "0"], "test_beams=0"),
    (["generate", "m", "x", "--temperature", "nan"], "finite"),
    (["generate", "m", "x", "--top-k", "-3"], "top_k=-3"),
    (["eval", "m", "--text", "t", "--batch-size", "0"], "batch_size=0"),
    (["score", "m", "x", "--device", "tpu"], "device='tpu' is not a device"),
    (["attention", "m", "x", "--device", "tpu"], "device='tpu' is not a device"),
    (["classify", "m", "x", "--batch-size", "0"], "batch_size=0"),
    (["translate", "m", "x", "--max-new-tokens", "-5"], "max_new_tokens=-5"),
    (["embed", "m", "x", "--batch-size", "0"], "batch_size=0"),
    (["quantize", "m", "q", "--bits", "4", "--group-size", "7"], "--group-size 7"),
    (["prepare", "c.txt", "--val-fraction", "1.5"], "val_fraction=1.5"),
])
def test_flags_are_checked_before_any_work(argv, match, capsys):
    one_line_error(capsys, argv, match)          # no file exists: the flag is refused first


def test_the_python_api_checks_the_same_fields():
    from lmforge.generate import GenerationConfig
    from lmforge.train import TrainConfig
    with pytest.raises(ConfigError, match="min_lr"):
        TrainConfig(lr=1e-3, min_lr=5.0)
    with pytest.raises(ConfigError, match="finite"):
        GenerationConfig(temperature=math.nan)
    with pytest.raises(ConfigError, match="optimizer='sgd' is not one of adamw, muon"):
        TrainConfig(optimizer="sgd")


def test_undecodable_and_unreadable_files_are_one_line(tmp_path, capsys, tiny_model_dir, char_data):
    bad = b"caf\xe9 \xff\xfe\n"
    (tmp_path / "t.csv").write_bytes(b"text,label\n" + bad * 20)
    (tmp_path / "p.txt").write_bytes(bad)
    cases = [
        (["train", "--objective", "classify", "--data", tmp_path / "t.csv", "--out", tmp_path / "c", "--preset",
          "bert-tiny", "--tokenizer", "char"], "not valid UTF-8"),
        (["generate", tiny_model_dir, "--prompt-file", tmp_path / "p.txt"], "not valid UTF-8"),
        (["classify", tiny_model_dir, "--file", tmp_path / "p.txt"], "not valid UTF-8"),
        (["eval", tiny_model_dir, "--text", tmp_path], "is a directory"),
        (["train", "--data", char_data, "--out", tmp_path / "p.txt" / "run"], "is a file"),
    ]
    for argv, match in cases:
        one_line_error(capsys, argv, match)


def test_chat_refuses_undecodable_stdin(tiny_model_dir):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, "-m", "lmforge", "chat", str(tiny_model_dir), "--max-new-tokens", "2",
                        "--device", "cpu"], input=b"\xff\xfe\xf5 hello\n", env=env, capture_output=True)
    assert r.returncode == 2 and b"not valid UTF-8" in r.stderr and b"Traceback" not in r.stderr, r.stderr


def test_broken_model_directories_are_one_line(tmp_path, capsys, tiny_model_dir):
    def copy(name: str) -> Path:
        shutil.copytree(tiny_model_dir, tmp_path / name)
        return tmp_path / name
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    (copy("strfield") / "config.json").write_text(json.dumps({**cfg, "n_layer": "2"}))
    (copy("badtokcfg") / "tokenizer_config.json").write_text("not json")
    from lmforge.modeldir import read_weights, save_tensors
    weights, meta = read_weights(tiny_model_dir / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name].clone()
    weights[name].view(-1)[3] = math.nan
    save_tensors(weights, copy("nan") / "model.safetensors", meta)
    for d, match in (("strfield", "'n_layer' is '2' (str) but must be of type int"),
                     ("badtokcfg", "tokenizer_config.json is not valid JSON"),
                     ("nan", f"tensor {name!r} holds 1 non-finite value")):
        one_line_error(capsys, ["generate", tmp_path / d, "x", "--max-new-tokens", "2"], match)


def test_eval_refuses_an_encoder_decoder(tmp_path, capsys, pairs_tsv):
    from lmforge.api import Model
    from lmforge.config import get_preset
    from lmforge.model import build_model
    from lmforge.tokenizers import train_char_tokenizer
    tok = train_char_tokenizer(["a cat and a dog"])
    config = get_preset("seq2seq-tiny", vocab_size=tok.vocab_size)
    Model(build_model(config), config, tok).save(tmp_path / "s2s")
    (tmp_path / "t.txt").write_text("a cat\n")
    one_line_error(capsys, ["eval", tmp_path / "s2s", "--text", tmp_path / "t.txt"], "needs a decoder")


# ------------------------------------------------------------------------------ tokenizer training
def test_long_words_are_cut_before_tokenizer_training():
    from lmforge.tokenizers import train_tokenizer
    from lmforge.tokenizers.base import MAX_WORD_CHARS, split_long_words
    pieces = list(split_long_words(["ab " + "x" * 250 + "  " + " " * 300 + "cd"]))
    assert "".join(pieces) == "ab " + "x" * 250 + "  " + " " * 300 + "cd"
    assert max(len(p) for p in pieces) <= MAX_WORD_CHARS
    for kind in ("bpe", "wordpiece"):                    # quadratic before: ~30 s for 300 KB of one word
        tok = train_tokenizer(kind, ["a" * 300_000 + "\nthe cat sat on the mat\n"], 300)
        assert tok.decode(tok.encode("the cat")).strip() == "the cat"


# ------------------------------------------------------------------------------ confined paths
def test_shards_and_module_paths_must_stay_inside_the_directory(tmp_path, tiny_model_dir, capsys):
    from lmforge.interop import export_hf
    hf = tmp_path / "hf"
    export_hf(tiny_model_dir, hf)
    secret = tmp_path / "elsewhere.safetensors"
    shutil.copy(hf / "model.safetensors", secret)
    (hf / "model.safetensors").rename(hf / "shard.safetensors")
    from safetensors import safe_open
    with safe_open(str(hf / "shard.safetensors"), "pt") as f:
        names = list(f.keys())
    for where in (str(secret), "../elsewhere.safetensors"):
        (hf / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: where for n in names}}))
        err = one_line_error(capsys, ["import", hf, tmp_path / "imp", "--no-progress"], "the shard")
        assert "outside" in err or "not a relative path" in err
    assert not (tmp_path / "imp").exists()
    with pytest.raises(ModelDirError, match="points outside"):
        confined(hf, "../../etc/passwd", "the module path")


def test_an_adapters_base_path_is_checked_without_listing_other_directories(tmp_path, char_data, tiny_model_dir,
                                                                            capsys):
    from lmforge.modeldir import ADAPTER_CONFIG
    lora = tmp_path / "lora"
    assert main(["finetune", str(tiny_model_dir), "--data", str(char_data), "--out", str(lora), "--lora-rank", "2",
                 "--max-steps", "1", "--eval-interval", "1", "--eval-iters", "1", "--batch-size", "2",
                 "--no-progress", "--device", "cpu", "--sample-interval", "0"]) == 0
    info = json.loads((lora / ADAPTER_CONFIG).read_text())
    for base, match in (("/etc", "absolute path"), ("../../../../../etc", "not a model directory")):
        (lora / ADAPTER_CONFIG).write_text(json.dumps({**info, "base_model": base}))
        err = one_line_error(capsys, ["merge-lora", lora, tmp_path / "m"], match)
        assert "passwd" not in err and "found" not in err
    assert main(["merge-lora", str(lora), str(tmp_path / "m"), "--base", str(tiny_model_dir)]) == 0


def test_data_errors_name_the_file(tmp_path):
    from lmforge.fileio import read_json, read_text
    with pytest.raises(DataError, match="does not exist"):
        read_text(tmp_path / "none.txt")
    (tmp_path / "b.json").write_text("{")
    with pytest.raises(DataError, match=r"b.json is not valid JSON"):
        read_json(tmp_path / "b.json")


# ------------------------------------------------------------------------------ the server (issue 27)
@pytest.fixture
def tiny_server(char_data):
    """A gpt-tiny random decoder behind the app, in-process, with a short body timeout."""
    from starlette.testclient import TestClient

    from lmforge.api import Model
    from lmforge.config import get_preset
    from lmforge.model import build_model
    from lmforge.serve import ServeConfig
    from lmforge.serve.app import create_app
    from lmforge.tokenizers import Tokenizer
    tokenizer = Tokenizer.load(char_data)
    config = get_preset("gpt-tiny", vocab_size=tokenizer.vocab_size, context_length=32)
    app = create_app(Model(build_model(config).eval(), config, tokenizer), ServeConfig(model_dir="x", body_timeout=0.5))
    with TestClient(app) as http:
        yield http, app.state.server


def test_a_body_that_trickles_in_gets_408_and_holds_no_row(tiny_server):
    """The body is read (within --body-timeout) before any row is asked for."""
    import asyncio

    from starlette.requests import Request

    from lmforge.serve.http import read_json
    from lmforge.serve.protocol import ApiError
    http, state = tiny_server
    held = []

    async def receive():                       # a byte every 0.1 s, never the end
        held.append(state.scheduler.running + state.scheduler.queue_depth)
        await asyncio.sleep(0.1)
        return {"type": "http.request", "body": b" ", "more_body": True}
    request = Request({"type": "http", "method": "POST", "path": "/v1/completions", "headers": [], "app": http.app},
                      receive)
    with pytest.raises(ApiError) as e:
        asyncio.run(read_json(request))
    assert e.value.status == 408 and e.value.code == "timeout" and "--body-timeout" in e.value.message
    assert 3 <= len(held) <= 7 and set(held) == {0}
    assert http.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200


def test_a_stream_reader_that_falls_behind_is_cancelled_with_an_error_event():
    """Past max_backlog unread events a stream's sequences are cancelled (their rows freed at the
    next step) and its reader gets what was queued, then one error event in OpenAI's shape."""
    import asyncio
    from types import SimpleNamespace

    from lmforge.serve.events import Token
    from lmforge.serve.replies import Mailbox, Reply

    async def run():
        cancelled = []
        reply = Reply(Mailbox(asyncio.get_running_loop()), SimpleNamespace(cancel=cancelled.extend), max_backlog=4)
        seq = SimpleNamespace(finish_reason=None, index=0)
        reply.seqs = [seq]
        stream = reply.stream(lambda s, text, entry: text, lambda s: "END")
        reply.deliver(Token(seq, 1, "a", None))
        first = await stream.__anext__()                 # the reader took one event, then stops reading
        for _ in range(10):
            reply.deliver(Token(seq, 2, "b", None))
        return first, [chunk async for chunk in stream], cancelled, seq
    first, rest, cancelled, seq = asyncio.run(run())
    assert first == "a" and rest[0].startswith("bbbbdata: ") and cancelled == [seq]
    error = json.loads(rest[0][4:].removeprefix("data: "))["error"]
    assert error["code"] == "stream_backlog_exceeded" and "--max-stream-backlog" in error["message"]


def test_sigterm_ends_the_running_streams_cleanly_within_the_timeout(tmp_path, char_data):
    """A real server (uvicorn) asked to stop while two long streams run: each gets its last chunk
    (finish_reason "cancelled") and [DONE], the process is gone within --shutdown-timeout plus
    2 s, and its log says so in one line at the start and one at the end."""
    import time

    import httpx

    from .test_serve import free_port, random_decoder_dir
    model = random_decoder_dir(tmp_path / "m", char_data, context_length=4096)
    port, log = free_port(), tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", str(model), "--port", str(port), "--device",
                                 "cpu", "--shutdown-timeout", "0.5"], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        url, body = f"http://127.0.0.1:{port}", {"prompt": "The", "max_tokens": 4000, "temperature": 0,
                                                 "stream": True, "ignore_eos": True}
        for _ in range(300):
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=60) as http:
            with http.stream("POST", "/v1/completions", json=body) as one, \
                    http.stream("POST", "/v1/completions", json=body) as two:
                lines = [one.iter_lines(), two.iter_lines()]
                assert all(next(it).startswith("data: ") for it in lines)          # both run
                t0 = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                rests = [[line for line in it if line.startswith("data: ")] for it in lines]
        proc.wait(timeout=30)
        stopped = time.monotonic() - t0
    finally:
        proc.kill()
    for rest in rests:
        assert rest[-1] == "data: [DONE]" and '"finish_reason": "cancelled"' in rest[-2]
    assert stopped < 0.5 + 2 + 1.5, stopped
    text = log.read_text()
    assert "Traceback" not in text and text.count("shutting down: 2 sequences running or waiting") == 1
    assert text.count("shut down after") == 1 and "2 cancelled" in text
