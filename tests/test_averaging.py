"""--ema-decay: the weight average against torch's own `AveragedModel`, exact resume, the
average as what is evaluated and saved, and the refusals."""

import subprocess
import sys

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from lmforge.api import load_model
from lmforge.errors import ConfigError, LmforgeError, ModelDirError
from lmforge.train import RunObserver, train
from lmforge.train.averaging import STATE_KEY
from lmforge.train.checkpoint import state_path

from .conftest import tiny_train_config


def test_the_saved_weights_are_torch_averaged_model_of_the_raw_ones(tmp_path, char_data):
    """The oracle: torch.optim.swa_utils.AveragedModel fed the raw weights before every step and
    the last raw weights (from the train state)."""
    decay = 0.9
    oracle: dict[str, AveragedModel] = {}

    def avg_fn(average, weight, n):            # n = weights averaged before: the initial ones are the first
        return decay * average + (1 - decay) * weight

    def recording(task, config, tokenizer):
        loss = task.loss

        def loss_fed_to_oracle(model, batch):
            if model.training:                 # a training step (evaluation runs in eval mode, on the average)
                oracle.setdefault("m", AveragedModel(model, avg_fn=avg_fn, use_buffers=False))
                oracle["m"].update_parameters(model)
            return loss(model, batch)
        task.loss = loss_fed_to_oracle
        return task

    class Evaluated(RunObserver):
        def __init__(self):
            self.steps, self.weights = [], {}

        def on_eval(self, step, model, metrics):
            self.steps.append(step)
            self.weights = {n: p.detach().clone() for n, p in model.named_parameters()}

    out, seen = tmp_path / "ema", Evaluated()
    train(tiny_train_config(char_data, out, max_steps=12, eval_interval=6, ema_decay=decay),
          wrap_task=recording, observers=[seen])
    state = torch.load(state_path(out, 12), weights_only=True)
    raw = state[STATE_KEY]["raw"]
    assert int(state[STATE_KEY]["count"]) == 12
    model = load_model(out)[0]
    raw_model = load_model(out)[0]
    raw_model.load_state_dict(raw, strict=False)
    oracle["m"].update_parameters(raw_model)          # the last step's weights
    averaged = dict(oracle["m"].module.named_parameters())
    saved = dict(model.named_parameters())
    assert set(raw) <= set(saved)
    for name in raw:
        torch.testing.assert_close(saved[name], averaged[name], rtol=1e-5, atol=1e-6)
        assert not torch.equal(saved[name], raw[name]), name     # the average is not the raw weights
    # what the run evaluated at its end (the observers see it) is the saved average
    assert seen.steps == [6, 12]
    for name in raw:
        assert torch.equal(seen.weights[name], saved[name]), name


def test_a_run_with_an_average_resumes_exactly(tmp_path, char_data):
    kw = dict(max_steps=12, eval_interval=4, dropout=0.1, ema_decay=0.8)
    straight = train(tiny_train_config(char_data, tmp_path / "straight", **kw))
    assert train(tiny_train_config(char_data, tmp_path / "stopped", stop_after=5, **kw))["stopped"]
    resumed = train(tiny_train_config(char_data, tmp_path / "stopped", resume=True, **kw))
    assert straight["val_loss"] == resumed["val_loss"]
    a, b = load_model(tmp_path / "straight")[0], load_model(tmp_path / "stopped")[0]
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), n
    sa = torch.load(state_path(tmp_path / "straight", 12), weights_only=True)[STATE_KEY]
    sb = torch.load(state_path(tmp_path / "stopped", 12), weights_only=True)[STATE_KEY]
    assert all(torch.equal(sa["raw"][n], sb["raw"][n]) for n in sa["raw"])
    with pytest.raises(LmforgeError, match="ema_decay|ema-decay"):      # the average is part of how it trained
        train(tiny_train_config(char_data, tmp_path / "stopped", resume=True, **{**kw, "max_steps": 20,
                                                                                 "ema_decay": 0.5}))
    plain = {**kw, "ema_decay": None}
    train(tiny_train_config(char_data, tmp_path / "plain", stop_after=5, **plain))
    with pytest.raises(ModelDirError, match="holds no weight average"):     # --force, but no average to resume
        train(tiny_train_config(char_data, tmp_path / "plain", resume=True, force=True, **kw))


def test_refusals(tmp_path, char_data):
    with pytest.raises(ConfigError, match="ema"):
        tiny_train_config(char_data, tmp_path / "x", ema_decay=1.0)
    r = subprocess.run([sys.executable, "-m", "lmforge", "train", "--data", str(char_data), "--out",
                        str(tmp_path / "y"), "--ema-decay", "1.5"], capture_output=True, text=True)
    assert r.returncode == 2 and "ema_decay=1.5 must be in [0, 1)" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(ConfigError, match="--ema-decay averages whole weights"):
        train(tiny_train_config(char_data, tmp_path / "z", strategy="fsdp", optimizer="adamw", ema_decay=0.9))
