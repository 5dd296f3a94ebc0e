"""The speed levers give the same answers as the plain path (CPU): fused vs foreach AdamW,
padded vs exact vocabulary, bf16 autocast vs fp32 (within bf16 noise), torch.compile'd
training vs eager. (Compiled decoding vs eager greedy tokens: tests/test_generate.py.)"""

import contextlib
import copy
import json

import pytest
import torch

from lmforge.config import get_preset
from lmforge.tasks import lm_loss
from lmforge.model import build_model
from lmforge.train import train

from .conftest import tiny_train_config


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to n (the CPU layout and the split products depend on them)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    with torch_threads(2):
        assert inference_layout(copy.deepcopy(plain), "cpu").transformer.blocks[0].attn.qkv.weight.is_contiguous()
    with torch_threads(1):                                  # one thread: MKL's GEMV, on column-major weights
        fast = inference_layout(copy.deepcopy(plain), "cpu")
    w = fast.transformer.blocks[0].attn.qkv.weight
    assert w.shape == (192, 64) and w.stride() == (1, 192)                   # same shape, column-major storage
    assert fast.lm_head.weight is fast.transformer.tok_emb.weight            # still tied
    x = torch.randint(0, 100, (2, 20))
    with torch.no_grad():                   # its products run on packed weights: another order of summation
        torch.testing.assert_close(fast(x), plain(x))
    saved = state_dict_for_save(fast)
    assert all(t.is_contiguous() for t in saved.values())
    assert all(torch.equal(saved[k], v) for k, v in state_dict_for_save(plain).items())
    from lmforge.generate import GenerationConfig, generate_ids
    cfg = GenerationConfig(max_new_tokens=12, greedy=True)
    assert generate_ids(plain, [[5, 6, 7]], cfg)[0] == generate_ids(fast, [[5, 6, 7]], cfg)[0]


def _mapping_of(address: int) -> dict[str, str]:
    """The /proc/self/smaps fields of the mapping that holds `address`."""
    fields, inside = {}, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside:
                fields[head.rstrip(":")] = line.split(None, 1)[1].strip()
    return fields


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_HUGEPAGE"), reason="madvise(MADV_HUGEPAGE) is Linux's")
def test_cpu_inference_layout_puts_float_weights_on_huge_pages(tmp_path):
    """A loaded float model's weights move into one mapping advised for 2 MiB pages: values,
    strides (column-major on one thread), tied weights and logits stay; it is done once; saving
    writes every tensor (not one per shared block); quantized models stay where they are, and so
    does any with LMFORGE_HUGE_PAGES=0; the compiled step on it decodes the eager tokens."""
    from lmforge.generate import GenerationConfig, generate_ids
    from lmforge.model import inference_layout
    from lmforge.model.huge_pages import on_huge_pages, weights_on_huge_pages
    from lmforge.modeldir import read_weights, save_weights, state_dict_for_save
    from lmforge.quantize.model import quantize_model
    torch.manual_seed(0)
    plain = build_model(get_preset("gpt-tiny", vocab_size=10000)).eval()          # ~3 MB of weights
    with torch_threads(1):
        fast = inference_layout(copy.deepcopy(plain), "cpu")
    block = fast.__dict__["_huge_pages"]
    assert on_huge_pages(fast) and not on_huge_pages(plain) and block.data_ptr() % (2 << 20) == 0
    assert all(block.data_ptr() <= t.data_ptr() < block.data_ptr() + block.numel() for t in fast.state_dict().values())
    assert fast.transformer.blocks[0].attn.qkv.weight.stride() == (1, 192)
    assert fast.lm_head.weight is fast.transformer.tok_emb.weight
    if "[never]" not in open("/sys/kernel/mm/transparent_hugepage/enabled").read():
        assert _mapping_of(block.data_ptr()).get("THPeligible") == "1"
    weights_on_huge_pages(fast)
    assert fast.__dict__["_huge_pages"] is block                                # once
    x = torch.randint(0, 10000, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x))
    save_weights(fast, tmp_path / "model.safetensors")
    saved, _ = read_weights(tmp_path / "model.safetensors")
    want = state_dict_for_save(plain)
    assert saved.keys() == want.keys() and all(torch.equal(saved[k], v) for k, v in want.items())
    quantized = copy.deepcopy(plain)
    quantize_model(quantized, 8)
    assert not on_huge_pages(inference_layout(quantized, "cpu"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LMFORGE_HUGE_PAGES", "0")
        assert not on_huge_pages(inference_layout(copy.deepcopy(plain), "cpu"))
    eager, compiled = GenerationConfig(max_new_tokens=12, greedy=True, compile=False), \
        GenerationConfig(max_new_tokens=12, greedy=True, compile=True)
    assert generate_ids(fast, [[5, 6, 7]], compiled)[0] == generate_ids(plain, [[5, 6, 7]], eager)[0]


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
    with torch_threads(1):                                  # the column-major layout of one thread
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


def test_eager_few_row_products_are_split_over_the_threads():
    """Eagerly on 2 threads a product of at most 8 rows by a row-major weight is one batched
    product over 2 blocks of the weight's rows (MKL's GEMV would take one thread), with F.linear's
    values; more rows, one thread, training (a gradient), a column-major or bf16 weight or outputs
    that do not split evenly take F.linear. A loaded model decodes the same greedy tokens either way."""
    import torch.nn.functional as F
    from lmforge.generate import GenerationConfig, generate_ids
    from lmforge.model import inference_layout
    from lmforge.model.linear import Linear, split_gemv
    torch.manual_seed(0)
    layer = Linear(48, 64)
    with torch_threads(2), torch.no_grad():
        for shape in ((1, 48), (2, 1, 48), (8, 48), (3, 1, 48)):
            x = torch.randn(*shape)
            assert split_gemv(x, layer.weight) is not None
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        assert split_gemv(torch.randn(9, 48), layer.weight) is None                     # a prompt: a matrix product
        assert split_gemv(torch.randn(1, 48), layer.weight.t().contiguous().t()) is None
        assert split_gemv(torch.randn(1, 48), torch.randn(63, 48)) is None
        assert split_gemv(torch.randn(1, 48).bfloat16(), layer.weight.bfloat16()) is None    # bf16: F.linear
    with torch_threads(1), torch.no_grad():
        assert split_gemv(torch.randn(1, 48), layer.weight) is None
    with torch_threads(2):
        assert split_gemv(torch.randn(1, 48), layer.weight) is None              # training: F.linear, as ever
    with torch_threads(2), torch.no_grad():
        assert not inference_layout(copy.deepcopy(layer), "cpu", split=False).weight.is_contiguous()
    model = build_model(get_preset("llama-tiny", vocab_size=50, context_length=32)).eval()
    cfg = GenerationConfig(max_new_tokens=12, greedy=True, compile=False)
    tokens = {}
    for n in (1, 2):
        with torch_threads(n):
            tokens[n] = generate_ids(inference_layout(copy.deepcopy(model), "cpu"), [[5, 6, 7], [8]], cfg)[0]
    assert tokens[1] == tokens[2]


def test_loaded_models_products_of_two_rows_or_more_run_on_a_packed_weight(monkeypatch):
    """`inference_layout` marks float32 and bf16 Linears (`packs`); eagerly without gradient their
    products of two rows or more (bf16: from one row) run on a copy of the weight packed for oneDNN,
    kept beside it, with F.linear's values; the copy follows the weight when it is updated in place;
    one float32 row, training (a gradient), other dtypes and unmarked layers take the GEMV or
    F.linear. The copies are skipped when they would take more than PACK_SHARE of the machine's
    memory. A batch decodes the same greedy tokens with and without them."""
    import torch.nn.functional as F
    import lmforge.model as lm_model
    from lmforge.generate import GenerationConfig, generate_ids
    from lmforge.model import inference_layout
    from lmforge.model import linear
    torch.manual_seed(0)
    layer = inference_layout(linear.Linear(48, 64), "cpu")
    assert layer.packs and layer not in linear._packed
    with torch.no_grad():
        for shape in ((2, 48), (3, 5, 48), (40, 48)):
            x = torch.randn(*shape)
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        packed = linear._packed[layer][1]
        assert packed.is_mkldnn                                         # oneDNN's blocked layout, beside the weight
        layer.weight.mul_(2)                                            # an in-place update: packed again
        x = torch.randn(4, 48)
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        assert linear._packed[layer][1] is not packed
        assert linear.packed_product(layer, x.bfloat16()) is None                   # bf16: F.linear
        unmarked = linear.Linear(48, 64)
        unmarked(x)
        assert unmarked not in linear._packed                                     # a model being trained: F.linear
    assert "_packed" not in layer.state_dict() and set(layer.state_dict()) == {"weight", "bias"}
    x = torch.randn(4, 48, requires_grad=True)
    assert linear.packed_product(layer, x) is None                    # training: F.linear and its gradient
    layer(x).sum().backward()
    assert x.grad is not None
    with torch.no_grad():
        assert linear.packed_product(layer, torch.randn(1, 1, 48)) is None        # one float32 row: the GEMV
        half = inference_layout(linear.Linear(48, 64).bfloat16(), "cpu")
        assert half.packs
        for rows in (1, 3):                                                      # bf16: packed from one row
            x = torch.randn(rows, 48).bfloat16()
            torch.testing.assert_close(linear.packed_product(half, x), F.linear(x, half.weight, half.bias))
    monkeypatch.setattr(lm_model, "_memory_bytes", lambda: 8 * 48 * 64 * 4 - 1)     # the copy would exceed 1/8
    assert not inference_layout(linear.Linear(48, 64), "cpu").packs
    monkeypatch.undo()
    model = build_model(get_preset("gpt-tiny", vocab_size=50, context_length=32)).eval()
    cfg = GenerationConfig(max_new_tokens=12, greedy=True, compile=False)
    plain = generate_ids(model, [[5, 6, 7], [8], [9, 10]], cfg)[0]
    fast = inference_layout(copy.deepcopy(model), "cpu")
    assert all(m.packs for m in fast.modules() if isinstance(m, linear.Linear))
    assert generate_ids(fast, [[5, 6, 7], [8], [9, 10]], cfg)[0] == plain
    assert any(m in linear._packed for m in fast.modules())
