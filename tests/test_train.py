import json
from pathlib import Path

import pytest
import torch

from lmforge.api import load_model
from lmforge.config import get_preset
from lmforge.tasks import lm_loss
from lmforge.errors import ConfigError, DataError, LmforgeError, ModelDirError
from lmforge.model import build_model
from lmforge.train import RunObserver, train
from lmforge.train.checkpoint import checkpoint_step
from lmforge.train.optim import make_adamw, param_groups
from lmforge.train.memory import check_memory_fits

from .conftest import tiny_train_config


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


@pytest.mark.parametrize("preset", ["gpt-tiny", "llama-tiny"])
def test_single_batch_overfits(preset):
    torch.manual_seed(0)
    model = build_model(get_preset(preset, vocab_size=64, dropout=0.0))
    opt = make_adamw(model, 3e-3, 0.0, (0.9, 0.95), "cpu")
    x = torch.randint(0, 64, (4, 33))
    for _ in range(300):
        loss = lm_loss(model(x[:, :-1]), x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_no_weight_decay_on_norms_biases_embeddings():
    model = build_model(get_preset("gpt-tiny"))
    decay, no_decay = param_groups(model, 0.1)
    decay_ids = {id(p) for p in decay["params"]}
    named = dict(model.named_parameters())
    assert id(named["transformer.blocks.0.attn.qkv.weight"]) in decay_ids
    for name in ("transformer.tok_emb.weight", "transformer.pos_emb.weight", "transformer.blocks.0.attn.qkv.bias",
                 "transformer.blocks.0.attn_norm.weight", "transformer.norm.weight"):
        assert id(named[name]) not in decay_ids, name


def test_training_writes_the_model_directory_and_loss_falls(tiny_model_dir):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "metrics.jsonl",
                 "loss.png", "train_config.yaml"):
        assert (tiny_model_dir / name).is_file(), name
    assert (tiny_model_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    losses = _losses(tiny_model_dir)
    assert sorted(losses) == list(range(1, 31))
    assert losses[30] < losses[1] - 1.0
    rows = [json.loads(line) for line in (tiny_model_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [15, 30] and evals[-1]["val_ppl"] > 1.0
    assert checkpoint_step(tiny_model_dir) == 30
    model, config, tok = load_model(tiny_model_dir)
    assert config.context_length == 32 and tok.kind == "char"


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_resume_is_exact(tmp_path, char_data, optimizer):
    kw = dict(max_steps=12, eval_interval=4, dropout=0.1, grad_accum=2, optimizer=optimizer)
    train(tiny_train_config(char_data, tmp_path / "straight", **kw))
    first = train(tiny_train_config(char_data, tmp_path / "stopped", stop_after=5, **kw))
    assert first["stopped"] and checkpoint_step(tmp_path / "stopped") == 5
    train(tiny_train_config(char_data, tmp_path / "stopped", resume=True, **kw))
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "stopped")
    a, _ = load_model(tmp_path / "straight")[:2]
    b, _ = load_model(tmp_path / "stopped")[:2]
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), n


class Recorder(RunObserver):
    """Records every call, in order (rows as given, the model by its mode)."""

    def __init__(self):
        self.calls = []

    def on_start(self, cfg, step):
        self.calls.append(("start", step))

    def on_log(self, row):
        self.calls.append(("log", row))

    def on_eval(self, step, model, metrics):
        self.calls.append(("eval", step, model.training, sorted(metrics)))

    def on_save(self, step, out):
        self.calls.append(("save", step, checkpoint_step(out)))

    def on_end(self, summary):
        self.calls.append(("end", summary["step"], summary["stopped"]))


def test_observers_see_exactly_the_rows_of_metrics_jsonl_and_every_checkpoint(tmp_path, char_data):
    def collapsed(task, config, tokenizer):              # every loss is "no better than constant": a warning row
        task.constant_loss = lambda: 0.0
        return task
    out, first, second = tmp_path / "run", Recorder(), Recorder()
    kw = dict(max_steps=100, log_interval=10, eval_interval=50, sample_interval=50, sample_tokens=4)
    train(tiny_train_config(char_data, out, stop_after=50, **kw), wrap_task=collapsed, observers=[first])
    summary = train(tiny_train_config(char_data, out, resume=True, **kw), wrap_task=collapsed, observers=[second])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seen = [c[1] for c in first.calls + second.calls if c[0] == "log"]
    assert seen == rows and {r["kind"] for r in rows} == {"train", "eval", "sample", "warning"}
    assert [c for c in first.calls + second.calls if c[0] != "log"] == [
        ("start", 0), ("eval", 50, False, ["val_loss", "val_ppl"]), ("save", 50, 50), ("end", 50, True),
        ("start", 50), ("eval", 100, False, ["val_loss", "val_ppl"]), ("save", 100, 100), ("end", 100, False)]
    assert "collapsed" in summary["warning"] and summary["val_ppl"] > 1.0


def test_refuses_to_overwrite_or_resume_wrongly(tmp_path, char_data, tiny_model_dir):
    with pytest.raises(ConfigError, match="already holds a trained model.*--resume"):
        train(tiny_train_config(char_data, tiny_model_dir))
    with pytest.raises(ModelDirError, match="cannot resume"):
        train(tiny_train_config(char_data, tmp_path / "fresh", resume=True))
    with pytest.raises(ConfigError, match="already at step 30.*--max-steps"):
        train(tiny_train_config(char_data, tiny_model_dir, resume=True))


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, char_data, monkeypatch):
    out = tmp_path / "run"
    train(tiny_train_config(char_data, out, max_steps=20, stop_after=4))
    before = (out / "model.safetensors").read_bytes()
    import safetensors.torch as st

    def crash(*a, **k):
        Path(a[1]).write_bytes(b"partial")          # half-written temp file, then the process dies
        raise KeyboardInterrupt
    monkeypatch.setattr(st, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_train_config(char_data, out, max_steps=20, stop_after=4, resume=True))
    monkeypatch.undo()
    assert (out / "model.safetensors").read_bytes() == before
    assert checkpoint_step(out) == 4 and not list(out.glob(".model.safetensors.*"))
    summary = train(tiny_train_config(char_data, out, max_steps=20, resume=True))   # still resumable
    assert summary["step"] == 20


def test_fine_tune_from_a_model_directory(tmp_path, char_data, tiny_model_dir):
    summary = train(tiny_train_config(char_data, tmp_path / "ft", init_from=str(tiny_model_dir), max_steps=4,
                                      lr=1e-4, warmup_steps=0, eval_interval=4))
    start = _losses(tiny_model_dir)[30]
    assert abs(_losses(tmp_path / "ft")[1] - start) < 0.5           # starts where the base model ended
    assert summary["step"] == 4
    train(tiny_train_config(char_data, tmp_path / "ft-drop", init_from=str(tiny_model_dir), max_steps=2,
                            dropout=0.2, attention_dropout=0.0))              # the dropout rates may change
    config = json.loads((tmp_path / "ft-drop" / "config.json").read_text())
    assert (config["dropout"], config["attention_dropout"]) == (0.2, 0.0)
    with pytest.raises(ConfigError, match="fixes the architecture"):
        train(tiny_train_config(char_data, tmp_path / "ft2", init_from=str(tiny_model_dir), context_length=64))


def test_context_longer_than_the_data(tmp_path):
    from lmforge.data.shards import PrepareConfig, prepare
    f = tmp_path / "small.txt"
    f.write_text("just a few words of text, not many at all\n" * 3)
    prepare(PrepareConfig(inputs=[str(f)], out=str(tmp_path / "d"), tokenizer="char", progress=False))
    with pytest.raises(DataError, match=r"val split .* fewer than context_length \+ 1.*--context-length"):
        train(tiny_train_config(tmp_path / "d", tmp_path / "r", context_length=32))


def test_batch_that_does_not_fit_memory():
    with pytest.raises(ConfigError, match=r"batch_size=4096 x context 1024.*GiB.*--batch-size.*--grad-accum"):
        check_memory_fits(get_preset("gpt2-1.5b"), 4096, torch.device("cpu"))
    check_memory_fits(get_preset("gpt-tiny"), 8, torch.device("cpu"))     # small ones pass


def test_bad_train_settings(tmp_path, char_data):
    with pytest.raises(ConfigError, match="unknown preset"):
        train(tiny_train_config(char_data, tmp_path / "x", preset="gpt-tinyy"))
    with pytest.raises(ConfigError, match="batch_size=0"):
        tiny_train_config(char_data, tmp_path / "x", batch_size=0)
    with pytest.raises(ConfigError, match="unknown task"):
        train(tiny_train_config(char_data, tmp_path / "x", task="rlhf"))
    with pytest.raises(DataError, match="does not exist"):
        train(tiny_train_config(tmp_path / "no-data", tmp_path / "x"))
    with pytest.raises(LmforgeError, match="no CUDA GPU"):
        if not torch.cuda.is_available():
            train(tiny_train_config(char_data, tmp_path / "x", device="cuda"))
        else:
            raise LmforgeError("no CUDA GPU (skipped: a GPU is present)")


def test_finetune_verb_api(tmp_path, char_data, tiny_model_dir):
    from lmforge.train.finetune import FinetuneConfig, finetune
    cfg = tiny_train_config(char_data, tmp_path / "ft", max_steps=2, eval_interval=2)
    summary = finetune(FinetuneConfig(model_dir=str(tiny_model_dir)), cfg)
    assert summary["step"] == 2 and (tmp_path / "ft" / "model.safetensors").is_file()
    with pytest.raises(ConfigError, match="unknown task 'translate'; use one of clm"):
        finetune(FinetuneConfig(model_dir=str(tiny_model_dir), task="translate"), cfg)


def test_newton_schulz_orthogonalises():
    from lmforge.train.muon import orthogonalize
    torch.manual_seed(0)
    G = torch.randn(32, 96) @ torch.diag(torch.logspace(-2, 1, 96))        # badly conditioned
    s = torch.linalg.svdvals(orthogonalize(G))
    assert s.min() > 0.5 and s.max() < 1.3                                 # all directions ~1 (vs 1e-2..1e1)
    assert orthogonalize(G.T).shape == (96, 32)


def test_muon_trains_and_resumes_exactly(tmp_path, char_data):
    kw = dict(max_steps=8, eval_interval=4, optimizer="muon", muon_lr=0.02, grad_accum=1)
    train(tiny_train_config(char_data, tmp_path / "a", **kw))
    train(tiny_train_config(char_data, tmp_path / "b", stop_after=3, **kw))
    train(tiny_train_config(char_data, tmp_path / "b", resume=True, **kw))
    losses = _losses(tmp_path / "a")
    assert losses == _losses(tmp_path / "b")
    assert losses[8] < losses[1] - 0.5
