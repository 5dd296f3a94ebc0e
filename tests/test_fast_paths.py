"""The speed levers give the same answers as the plain path (CPU): fused vs foreach AdamW,
padded vs exact vocabulary, bf16 autocast vs fp32 (within bf16 noise), torch.compile'd
training vs eager. (Compiled decoding vs eager greedy tokens: tests/test_generate.py.)"""

import copy
import json

import pytest
import torch

from lmforge.config import get_preset
from lmforge.tasks import lm_loss
from lmforge.model import build_model
from lmforge.train import train

from .conftest import tiny_train_config


def _train_steps(model, opt, x, steps=5, autocast=None):
    losses = []
    for _ in range(steps):
        with autocast() if autocast else torch.autocast("cpu", enabled=False):
            loss = lm_loss(model(x[:, :-1]), x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_fused_adamw_matches_foreach():
    from lmforge.train.optim import param_groups
    torch.manual_seed(0)
    a = build_model(get_preset("gpt-tiny", vocab_size=64))
    b = copy.deepcopy(a)
    x = torch.randint(0, 64, (4, 33))
    groups = lambda m: [g for g in param_groups(m, 0.1) if g["params"]]          # noqa: E731
    la = _train_steps(a, torch.optim.AdamW(groups(a), lr=3e-3, fused=True), x)
    lb = _train_steps(b, torch.optim.AdamW(groups(b), lr=3e-3, foreach=True), x)
    assert la == pytest.approx(lb, rel=1e-5)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=2e-5)          # same update, other rounding


def test_padded_vocabulary_gives_the_same_logits():
    torch.manual_seed(0)
    padded = build_model(get_preset("llama-tiny", vocab_size=100, pad_vocab_multiple=64)).eval()
    exact = build_model(get_preset("llama-tiny", vocab_size=100, pad_vocab_multiple=1)).eval()
    vocab_rows = ("transformer.tok_emb.weight", "lm_head.weight")
    state = {k: (v[:100] if k in vocab_rows else v) for k, v in padded.state_dict().items()}
    exact.load_state_dict(state)
    x = torch.randint(0, 100, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(padded(x), exact(x))


def test_bf16_autocast_follows_the_fp32_loss_curve():
    torch.manual_seed(0)
    a = build_model(get_preset("gpt-tiny", vocab_size=64))
    b = copy.deepcopy(a)
    x = torch.randint(0, 64, (4, 33))
    fp32 = _train_steps(a, torch.optim.AdamW(a.parameters(), lr=3e-3), x, steps=20)
    bf16 = _train_steps(b, torch.optim.AdamW(b.parameters(), lr=3e-3), x, steps=20,
                        autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert max(abs(p - q) for p, q in zip(fp32, bf16)) < 0.05                    # bf16 noise, same curve
    assert bf16[-1] < bf16[0] - 1.0


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, char_data):
    kw = dict(max_steps=4, eval_interval=4, log_interval=1)
    train(tiny_train_config(char_data, tmp_path / "eager", **kw))
    train(tiny_train_config(char_data, tmp_path / "compiled", compile=True, **kw))

    def losses(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r["kind"] == "train"]
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), abs=1e-4)


def test_cpu_inference_layout_keeps_logits_state_dict_and_tied_weights(tmp_path):
    from lmforge.model import inference_layout
    from lmforge.modeldir import state_dict_for_save
    torch.manual_seed(0)
    plain = build_model(get_preset("gpt-tiny", vocab_size=100)).eval()
    fast = inference_layout(copy.deepcopy(plain), "cpu")
    w = fast.transformer.blocks[0].attn.qkv.weight
    assert w.shape == (192, 64) and w.stride() == (1, 192)                   # same shape, column-major storage
    assert fast.lm_head.weight is fast.transformer.tok_emb.weight            # still tied
    x = torch.randint(0, 100, (2, 20))
    with torch.no_grad():
        assert torch.equal(plain(x), fast(x))
    saved = state_dict_for_save(fast)
    assert all(t.is_contiguous() for t in saved.values())
    assert all(torch.equal(saved[k], v) for k, v in state_dict_for_save(plain).items())
    from lmforge.generate import GenerationConfig, generate_ids
    cfg = GenerationConfig(max_new_tokens=12, greedy=True)
    assert generate_ids(plain, [[5, 6, 7]], cfg)[0] == generate_ids(fast, [[5, 6, 7]], cfg)[0]


def test_cpu_dropout_keeps_nn_dropouts_distribution_and_gradient():
    """lmforge's CPU dropout draws a uniform mask instead of bernoulli_: each unit is kept with
    probability 1 - p and scaled by 1 / (1 - p), the gradient passes through the same mask, a
    seed repeats it, and outside training (or at p = 0) it is the identity, as nn.Dropout."""
    from lmforge.model.dropout import Dropout
    p, x = 0.2, torch.randn(64, 128, 128, requires_grad=True)
    drop = Dropout(p)
    torch.manual_seed(3)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))
    torch.manual_seed(3)
    assert torch.equal(drop(x), y)
    reference = torch.nn.Dropout(p)(x)                       # same rate as ATen's own, to sampling error
    assert abs((reference != 0).float().mean().item() - kept.float().mean().item()) < 0.005
    assert torch.equal(drop.eval()(x), x) and torch.equal(Dropout(0.0)(x), x)


def test_compiled_cpu_decode_step_writes_few_row_products_as_sums():
    """Compiling a loaded model's decode step lays its column-major weights out row-major, and a
    compiled Linear on one row is inductor's own loop (no MKL GEMV call: `extern_kernels.mm`) with
    F.linear's values; a prompt's 16 rows still go to MKL."""
    import torch.nn.functional as F
    from torch._inductor.utils import run_and_get_code
    from lmforge.generate.core import compiled_decode_step
    from lmforge.model import inference_layout
    from lmforge.model.linear import Linear
    torch.manual_seed(0)
    model = inference_layout(build_model(get_preset("llama-tiny", vocab_size=50, context_length=32)).eval(), "cpu")
    head = model.lm_head
    assert isinstance(head, Linear) and not head.weight.is_contiguous()        # column-major for eager
    compiled_decode_step(model)
    assert all(m.weight.is_contiguous() for m in model.modules() if isinstance(m, Linear))
    for rows, via_mkl in ((1, False), (16, True)):
        x = torch.randn(1, rows, head.in_features)
        torch._dynamo.reset()
        y, code = run_and_get_code(torch.compile(head), x)
        assert ("extern_kernels.mm(" in "\n".join(code)) == via_mkl
        torch.testing.assert_close(y, F.linear(x, head.weight), rtol=1e-5, atol=1e-5)
