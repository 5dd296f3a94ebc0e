"""Keep the best, not the last (--keep-best), and early stopping (--patience): a run whose
validation metric peaks early ends with the peak's weights in its model directory, a resume
remembers the peak, and patience ends the run."""

import json

import pytest
import torch

from lmforge.modeldir import read_weights
from lmforge.tasks.classify import ClassifyConfig
from lmforge.train import RunObserver, train
from lmforge.train.checkpoint import STATE_DIR, checkpoint_step

from .conftest import tiny_train_config


class Snapshots(RunObserver):
    """The model's weights at each evaluation."""

    def __init__(self):
        self.weights = {}

    def on_eval(self, step, model, metrics):
        self.weights[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}


def scripted(values):
    """wrap_task: the classifier's validation macro-F1 is `values`, one per evaluation, in order."""
    values = list(values)

    def wrap(task, config, tokenizer):
        def evaluate(model, device, autocast):
            return {"val_accuracy": 0.5, "val_macro_f1": values.pop(0)}
        task.evaluate = evaluate
        return task
    return wrap


def _config(topics_csv, out, tiny_encoder_dir, **kw):
    return tiny_train_config(topics_csv, out, task="classify", init_from=str(tiny_encoder_dir), max_steps=8,
                             eval_interval=2, batch_size=4, lr=2e-3, task_options=ClassifyConfig(baseline=False), **kw)


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("ema_decay", [None, 0.5])
def test_a_run_that_peaks_early_keeps_the_peak(tmp_path, topics_csv, tiny_encoder_dir, ema_decay):
    """With --ema-decay, what is evaluated, kept and scored is the weight average."""
    out, seen = tmp_path / "peak", Snapshots()
    summary = train(_config(topics_csv, out, tiny_encoder_dir, ema_decay=ema_decay),
                    wrap_task=scripted([0.5, 0.9, 0.6, 0.4]), observers=[seen])
    assert summary["step"] == 8 and summary["best_step"] == 4 and summary["val_macro_f1"] == 0.9
    assert checkpoint_step(out) == 4                                   # the directory is at the peak
    weights, _ = read_weights(out / "model.safetensors")
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, seen.weights[4][name], rtol=0, atol=0)
    assert not torch.equal(weights["classifier.proj.weight"], seen.weights[8]["classifier.proj.weight"])
    assert sorted(p.name for p in (out / STATE_DIR).glob("step-*")) == ["step-00000004.pt"]   # resumable there
    report = json.loads((out / "classification_report.json").read_text())
    assert report["examples"] == 24                                     # the final report scored the kept weights
    kept = _rows(out)[-1]
    assert (kept["kind"], kept["step"], kept["best_step"], kept["val_macro_f1"]) == ("best", 8, 4, 0.9)
    card = (out / "README.md").read_text()                              # the card scores the kept weights too
    assert "At the best evaluation (step 4; the last was step 8)" in card
    assert "value: 0.9\n      name: validation macro F1" in card

    last = train(_config(topics_csv, tmp_path / "last", tiny_encoder_dir, keep_best=False),
                 wrap_task=scripted([0.5, 0.9, 0.6, 0.4]))
    assert "best_step" not in last and checkpoint_step(tmp_path / "last") == 8     # --no-keep-best: the last
    assert "best" not in {r["kind"] for r in _rows(tmp_path / "last")}
    assert "At the last evaluation (step 8)" in (tmp_path / "last" / "README.md").read_text()


def test_a_resume_remembers_the_best_before_it(tmp_path, topics_csv, tiny_encoder_dir):
    out = tmp_path / "resumed"
    first = train(_config(topics_csv, out, tiny_encoder_dir, stop_after=6), wrap_task=scripted([0.5, 0.9, 0.6]))
    assert first["stopped"] and checkpoint_step(out) == 6             # interrupted: the last checkpoint resumes
    assert json.loads((out / STATE_DIR / "best.json").read_text())["step"] == 4
    summary = train(_config(topics_csv, out, tiny_encoder_dir, resume=True), wrap_task=scripted([0.7]))
    assert summary["best_step"] == 4 and checkpoint_step(out) == 4


def test_patience_stops_the_run(tmp_path, topics_csv, tiny_encoder_dir, capsys):
    out = tmp_path / "patient"
    cfg = _config(topics_csv, out, tiny_encoder_dir, patience=2)
    cfg.max_steps = 16
    summary = train(cfg, wrap_task=scripted([0.5, 0.9, 0.6, 0.4, 0.95, 0.99]))
    assert summary["early_stopped"] and not summary["stopped"] and summary["step"] == 8
    assert summary["best_step"] == 4 and checkpoint_step(out) == 4
    assert max(r["step"] for r in _rows(out)) == 8
    assert "early stop: val_macro_f1 has not improved for 2 evaluations (--patience 2); the best, 0.9000, was at " \
           "step 4" in capsys.readouterr().out
    assert "test_macro_f1" in summary                                   # an early stop is a finished run
