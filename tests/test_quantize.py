import json

import pytest
import torch

from lmforge.api import load, load_model
from lmforge.config import ModelConfig
from lmforge.errors import ConfigError, LmforgeError
from lmforge.quantize import (Int4Linear, Int8Linear, QuantizeConfig, dequantize_int4, quantize, quantize_int4,
                              quantize_int8)
from lmforge.train.finetune import FinetuneConfig, finetune

from .conftest import tiny_train_config

# stated tolerances: relative L2 error of the logits of the 30-step toy model (trained with Muon, int4 gives 0.095
# there; the 1,500-step gpt-mini quickstart model: int8 0.004, int4 0.042)
INT8_LOGIT_TOLERANCE, INT4_LOGIT_TOLERANCE = 0.01, 0.12


def test_quantization_error_is_at_most_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(48, 64)
    q, scales = quantize_int8(w)
    assert q.dtype == torch.int8 and q.abs().max() == 127
    assert ((q.float() * scales[:, None] - w).abs() <= scales[:, None] / 2 + 1e-6).all()
    packed, scales4, offsets = quantize_int4(w, group_size=16)
    assert packed.shape == (48, 32) and packed.dtype == torch.uint8 and scales4.shape == (48, 4)
    err = (dequantize_int4(packed, scales4, offsets) - w).view(48, 4, 16).abs()
    assert (err <= scales4[..., None] / 2 + 1e-6).all()


def test_int4_packing_golden():
    w = torch.tensor([[0.0, 1.0, 2.0, 15.0]])                     # one group: offset 0, scale 1
    packed, scales, offsets = quantize_int4(w, group_size=4)
    assert packed.tolist() == [[0 | 1 << 4, 2 | 15 << 4]] and scales.tolist() == [[1.0]] and offsets.tolist() == [[0.0]]
    assert dequantize_int4(packed, scales, offsets).tolist() == w.tolist()


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_quantized_directories_load_and_stay_close(tmp_path, tiny_model_dir):
    original = load(tiny_model_dir, device="cpu")
    x = torch.randint(4, 60, (4, 32))
    with torch.no_grad():
        reference = original.module(x)
    errors = {}
    for bits in (8, 4):
        out = tmp_path / f"int{bits}"
        result = quantize(QuantizeConfig(str(tiny_model_dir), str(out), bits=bits, group_size=32))
        config = ModelConfig.load(out / "config.json")
        assert config.quantization == result["quantization"] and config.quantization["bits"] == bits
        assert "lm_head" not in config.quantization["modules"]               # tied to the embedding: kept
        lm = load(out, device="cpu")
        kind = Int8Linear if bits == 8 else Int4Linear
        assert sum(isinstance(m, kind) for m in lm.module.modules()) == len(config.quantization["modules"]) == 8
        with torch.no_grad():
            errors[bits] = _relative_error(lm.module(x), reference)
        assert lm.generate("The ", max_new_tokens=5, greedy=True) is not None
        assert (out / "model.safetensors").stat().st_size < 0.6 * (tiny_model_dir / "model.safetensors").stat().st_size
    assert errors[8] < INT8_LOGIT_TOLERANCE and errors[4] < INT4_LOGIT_TOLERANCE and errors[8] < errors[4]


def test_quantize_report(tmp_path, tiny_model_dir, corpus_file):
    text = tmp_path / "t.txt"
    text.write_text(corpus_file.read_text()[:2000])
    result = quantize(QuantizeConfig(str(tiny_model_dir), str(tmp_path / "q"), bits=8, report=True, text=str(text),
                                   report_tokens=8))
    original, quantized = result["report"]
    assert original["model"] == "original" and quantized["model"] == "int8"
    assert quantized["size_ratio"] < 0.6 and quantized["decode_tokens_per_s"] > 0
    assert abs(quantized["ppl_delta_pct"]) < 2.0
    assert json.loads((tmp_path / "q" / "quantize_report.json").read_text()) == result["report"]


def test_quantize_errors(tmp_path, tiny_model_dir, char_data):
    once = tmp_path / "int8"
    quantize(QuantizeConfig(str(tiny_model_dir), str(once), bits=8))
    with pytest.raises(ConfigError, match="already quantized"):
        quantize(QuantizeConfig(str(once), str(tmp_path / "twice"), bits=4))
    with pytest.raises(ConfigError, match="does not divide the 64 inputs"):
        quantize(QuantizeConfig(str(tiny_model_dir), str(tmp_path / "g"), bits=4, group_size=24))
    with pytest.raises(LmforgeError, match="--text FILE"):
        quantize(QuantizeConfig(str(tiny_model_dir), str(tmp_path / "r"), report=True))
    with pytest.raises(ConfigError, match="quantized.*fine-tune the original"):
        finetune(FinetuneConfig(str(once)), tiny_train_config(char_data, tmp_path / "ft", init_from=str(once)))
    model, config, _ = load_model(once)
    assert config.quantization["bits"] == 8


def test_quantize_verb(tmp_path, tiny_model_dir, capsys):
    from lmforge.cli import main
    assert main(["quantize", str(tiny_model_dir), str(tmp_path / "q4"), "--bits", "4", "--group-size", "32"]) == 0
    assert "8 Linear layers in int4 (groups of 32)" in capsys.readouterr().out
    assert main(["generate", str(tmp_path / "q4"), "The ", "--max-new-tokens", "4", "--device", "cpu"]) == 0
    assert main(["quantize", str(tmp_path / "q4"), str(tmp_path / "again")]) == 2
    assert "already quantized" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_decode_step_fuses_dequantization_with_the_same_tokens(tmp_path, tiny_model_dir):
    """The compiled step writes each int4 product as a sum over the inputs (so that inductor never
    writes a float weight matrix) and each int8 product on int8 inputs (`int8_product`, as eagerly);
    it must decode the tokens eager decoding gives, past the context window too."""
    from lmforge.generate import GenerationConfig, generate_ids
    from lmforge.model.quantized import fused_gemv
    assert not fused_gemv(torch.zeros(1, 8))                          # eager: F.linear
    for bits in (8, 4):
        quantize(QuantizeConfig(str(tiny_model_dir), str(tmp_path / f"q{bits}"), bits=bits, group_size=32))
        module = load(tmp_path / f"q{bits}", device="cpu").module
        prompts, new = [[5, 6, 7, 8], [9, 10]], module.config.context_length + 8
        eager, _, _ = generate_ids(module, prompts, GenerationConfig(max_new_tokens=new, greedy=True))
        compiled, _, stats = generate_ids(module, prompts, GenerationConfig(max_new_tokens=new, greedy=True,
                                                                            compile=True))
        assert compiled == eager and stats["reencodes"] >= 1, bits


def test_int8_products_on_a_cpu_quantize_the_input_per_row_and_multiply_in_integers():
    """Without gradient on a CPU, Int8Linear quantizes each input row to int8 (its largest
    magnitude at 127) and multiplies in int32: equal to that arithmetic done in int64 here, and
    close to the float product. With a gradient it dequantizes the weight instead, so the
    gradient reaches the input (LoRA on a quantized base)."""
    from lmforge.model.quantized import int8_product
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(2, 3, 64) * torch.tensor([0.1, 1.0, 10.0])[:, None]          # rows of different scales
    rows = x.reshape(-1, 64)
    step = rows.abs().amax(-1, keepdim=True) / 127
    xq = torch.round(rows / step).long()
    assert xq.abs().max() == 127
    exact = ((xq @ layer.weight.long().T).float() * step).reshape(2, 3, 48)
    torch.testing.assert_close(int8_product(x, layer.weight), exact, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        y = layer(x)
    torch.testing.assert_close(y, exact * layer.scales + layer.bias, rtol=1e-6, atol=1e-6)
    assert ((y - linear(x)).norm() / linear(x).norm()) < 0.01
    x.requires_grad_(True)
    dequantized = layer(x)
    dequantized.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(dequantized, torch.nn.functional.linear(x, layer.weight.float() * layer.scales[:, None],
                                                                       layer.bias))


def test_int8_dequantizes_where_integer_products_are_missing(monkeypatch):
    """A PyTorch build without a CPU `torch._int_mm` (asked once, when the first Int8Linear is
    built) keeps the dequantized product, float inputs and all."""
    import lmforge.model.quantized as quantized
    torch.manual_seed(0)
    monkeypatch.setattr(quantized, "integer_products_work", lambda: False)
    layer = Int8Linear.from_linear(torch.nn.Linear(32, 16))
    x = torch.randn(3, 32)
    with torch.no_grad():
        y = layer(x)
    torch.testing.assert_close(y, torch.nn.functional.linear(x, layer.weight.float() * layer.scales[:, None], layer.bias))


def _kernel_or_skip():
    """Skip where the kernels cannot run (no C++ compiler, a CPU without AVX-512 VNNI and VBMI);
    where they can, they must build, register and pass their self-tests."""
    import shutil
    from pathlib import Path
    from lmforge.model.vnni import _cpu_flags, kernels_work
    flags = _cpu_flags().split()
    if not (shutil.which("c++") and Path("/proc/cpuinfo").exists() and "avx512_vnni" in flags and "avx512vbmi" in flags):
        pytest.skip("lmforge's int4 and int8 kernels need x86-64 with AVX-512 VNNI and VBMI and a C++ compiler")
    assert kernels_work(), "the CPU and compiler can run lmforge's kernels, but they did not build or pass their self-tests"


def test_int4_kernel_multiplies_in_integers_once_laid_out():
    """Laid out by inference_layout on a CPU with AVX-512 VNNI, Int4Linear quantizes each input
    row to int8 and multiplies the nibbles in integers (`lmforge::int4_product`): equal to that
    arithmetic done in int64, within 2% of the float int4 product, compiled as eagerly. 85
    outputs take a tile of 64, one of 16 and a partial one. With a gradient it dequantizes."""
    from lmforge.model import inference_layout
    _kernel_or_skip()
    torch.manual_seed(0)
    layer = Int4Linear.from_linear(torch.nn.Linear(64, 85), group_size=16)
    x = torch.randn(2, 3, 64) * torch.tensor([0.1, 1.0, 10.0])[:, None]          # rows of different scales
    with torch.no_grad():
        floats = layer(x)
    inference_layout(torch.nn.ModuleList([layer]), "cpu")
    assert layer.integer_products and layer.weight.stride() == (1, 85) and layer.scales.stride() == (1, 85)
    with torch.no_grad():
        y = layer(x)
        compiled = torch.compile(layer)(x[:1, :1])
    rows = x.reshape(6, 64)
    step = rows.abs().amax(-1, keepdim=True) / 127
    xq = torch.round(rows / step).long()
    q = torch.stack((layer.weight & 15, layer.weight >> 4), dim=-1).reshape(85, 64).long()
    dots = (xq.view(6, 1, 4, 16) * q.view(1, 85, 4, 16)).sum(-1).float()                    # (rows, out, groups)
    exact = step * (dots * layer.scales).sum(-1) + (rows.view(6, 1, 4, 16).sum(-1) * layer.offsets).sum(-1)
    torch.testing.assert_close(y, (exact + layer.bias).reshape(2, 3, 85), rtol=1e-5, atol=1e-5)
    assert (y - floats).norm() / floats.norm() < 0.02
    torch.testing.assert_close(compiled, y[:1, :1], rtol=1e-6, atol=1e-6)
    x.requires_grad_(True)
    dequantized = layer(x)
    dequantized.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.testing.assert_close(dequantized, floats)


def test_int8_kernel_multiplies_few_rows_in_integers_once_laid_out():
    """Laid out by inference_layout on a CPU with AVX-512 VNNI, Int8Linear's products of at most 4
    rows (a decode step's) run on `lmforge::int8_product`, which quantizes each row inside: equal
    to the same integer arithmetic done in int64 and to oneDNN's `torch._int_mm` path (which more
    rows keep), compiled as eagerly. 37 outputs take two tiles of 16 and a partial one; 100 inputs
    a block of 64 and a partial one."""
    from lmforge.model import inference_layout
    from lmforge.model.quantized import int8_product
    _kernel_or_skip()
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(torch.nn.Linear(100, 37))
    x = torch.randn(1, 3, 100) * torch.tensor([0.1, 1.0, 10.0])[:, None]          # rows of different scales
    inference_layout(torch.nn.ModuleList([layer]), "cpu")
    assert layer.kernel and layer.weight.is_contiguous()
    with torch.no_grad(), torch.profiler.profile() as profile:
        y = layer(x)
    assert any(e.name == "lmforge::int8_product" for e in profile.events())
    rows = x.reshape(3, 100)
    step = rows.abs().amax(-1, keepdim=True) / 127
    exact = (torch.round(rows / step).long() @ layer.weight.long().T).float() * step * layer.scales + layer.bias
    torch.testing.assert_close(y, exact.reshape(1, 3, 37), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, int8_product(x, layer.weight) * layer.scales + layer.bias, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        compiled = torch.compile(layer)(x[:, :1])
        many = torch.randn(5, 100)                                                  # 5 rows: oneDNN's product
        with torch.profiler.profile() as profile:
            y_many = layer(many)
    torch.testing.assert_close(compiled, y[:, :1], rtol=1e-6, atol=1e-6)
    assert not any(e.name == "lmforge::int8_product" for e in profile.events())
    torch.testing.assert_close(y_many, int8_product(many, layer.weight) * layer.scales + layer.bias)


def test_quantized_layers_keep_their_products_where_the_kernels_do_not_run(monkeypatch, tmp_path):
    """No compiler (or a failing one): no kernel is built, and a laid-out Int4Linear keeps the
    float product it had before, an Int8Linear oneDNN's."""
    import lmforge.model as model_package
    from lmforge.model import inference_layout, vnni
    monkeypatch.setenv("LMFORGE_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")
    monkeypatch.setattr(vnni.shutil, "which", lambda name: "/bin/false" if name == "false" else None)
    assert vnni.build() is None and not list(tmp_path.iterdir())
    monkeypatch.setattr(model_package, "kernels_work", lambda: False)
    torch.manual_seed(0)
    layer = Int4Linear.from_linear(torch.nn.Linear(64, 32), group_size=16)
    layer8 = Int8Linear.from_linear(torch.nn.Linear(64, 32))
    x = torch.randn(3, 64)
    with torch.no_grad():
        before, before8 = layer(x), layer8(x)
        inference_layout(torch.nn.ModuleList([layer, layer8]), "cpu")
        assert not layer.integer_products and not layer8.kernel
        torch.testing.assert_close(layer(x), before)
        torch.testing.assert_close(layer8(x), before8)
