"""The default decode step (`GenerationConfig.compile` unset): eager for short runs, compiled once
a CPU model has decoded eagerly for `AUTO_COMPILE_AFTER_S` at a batch size, back to eager where
compiling fails or the compiled step is measured slower — with the same greedy tokens throughout."""

import pytest
import torch

from lmforge.config import get_preset
from lmforge.generate import GenerationConfig, generate_ids
from lmforge.generate import auto_compile
from lmforge.model import build_model, inference_layout


def _model():
    torch.manual_seed(0)
    model = build_model(get_preset("llama-tiny", vocab_size=50, context_length=32)).eval()
    return inference_layout(model, "cpu")          # as `lmforge.load` gives it


PROMPTS = [[5, 6, 7, 8]]
GREEDY = dict(max_new_tokens=10, greedy=True)


def test_short_runs_stay_eager_and_are_counted():
    model = _model()
    for _ in range(2):
        generate_ids(model, PROMPTS, GenerationConfig(**GREEDY))
    _, _, stats = generate_ids(model, PROMPTS, GenerationConfig(**GREEDY))
    assert stats["compiled"] is False                          # which step ran (`generate --json`: "compiled")
    times = model._decode_times[(1, False)]
    assert not hasattr(model, "_compiled_decode_step") and not times.compiled
    assert times.eager_steps == 3 * 8 and 0 < times.eager_s < auto_compile.AUTO_COMPILE_AFTER_S


@pytest.mark.slow
def test_the_default_compiles_after_its_eager_budget_with_the_same_tokens(monkeypatch):
    model = _model()
    eager, _, _ = generate_ids(model, PROMPTS, GenerationConfig(**GREEDY, compile=False))
    monkeypatch.setattr(auto_compile, "AUTO_COMPILE_AFTER_S", 1e-6)   # the first call spent the budget
    assert auto_compile.use_compiled_step(model, GenerationConfig(), (1, False), torch.device("cpu"))
    assert not auto_compile.use_compiled_step(model, GenerationConfig(), (2, False), torch.device("cpu"))
    assert not auto_compile.use_compiled_step(model, GenerationConfig(compile=False), (1, False),
                                              torch.device("cpu"))
    compiled, _, stats = generate_ids(model, PROMPTS, GenerationConfig(**GREEDY))
    assert stats["compiled"] and hasattr(model, "_compiled_decode_step") and model._decode_times[(1, False)].compiled
    assert model.transformer.blocks[0].attn.kv_cache.k_cache.shape[2] == 33       # the static cache kept
    batch, _, _ = generate_ids(model, PROMPTS * 2, GenerationConfig(**GREEDY))    # batch 2: not yet, eager
    again, _, _ = generate_ids(model, PROMPTS, GenerationConfig(**GREEDY))
    assert compiled == eager and batch == eager * 2 and again == eager
    assert model._decode_times[(1, False)].compiled_steps == 2 * 8


def test_a_step_that_cannot_compile_decodes_eagerly_from_then_on(monkeypatch):
    model = _model()
    eager, _, _ = generate_ids(model, PROMPTS, GenerationConfig(**GREEDY))

    def no_compiler(m, shape):
        def fail(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return fail
    monkeypatch.setattr(auto_compile, "compiled_decode_step", no_compiler)
    monkeypatch.setattr(auto_compile, "AUTO_COMPILE_AFTER_S", 0.0)
    with pytest.warns(UserWarning, match="could not be compiled here .*InvalidCxxCompiler.*decoding eagerly"):
        fallback, _, _ = generate_ids(model, PROMPTS, GenerationConfig(**GREEDY))
    assert fallback == eager and model._eager_only
    assert not auto_compile.use_compiled_step(model, GenerationConfig(), (1, False), torch.device("cpu"))
    with pytest.raises(RuntimeError, match="InvalidCxxCompiler"):          # asked for: the error, not a fallback
        generate_ids(model, PROMPTS, GenerationConfig(**GREEDY, compile=True))


def test_a_compiled_step_measured_slower_is_given_up():
    before = torch.get_num_threads()
    torch.set_num_threads(1)                       # one thread: the eager layout is column-major
    try:
        _measured_slower_is_given_up()
    finally:
        torch.set_num_threads(before)


def _measured_slower_is_given_up():
    model = _model()
    w = model.transformer.blocks[0].attn.qkv.weight
    w.data = w.data.contiguous()                               # row-major, as a compiled step lays it out
    default = GenerationConfig()
    auto_compile.record_run(model, default, (1, False), False, 0.01, 0.1, 100)      # eager: 1 ms a step
    auto_compile.record_run(model, GenerationConfig(compile=True), (1, False), True, 5.0, 0.3, 100)
    assert not getattr(model, "_eager_only", False)            # what an explicit --compile run measured is kept
    auto_compile.record_run(model, default, (1, False), True, 0.01, 0.3, 100)       # compiled: 3 ms a step
    assert model._eager_only
    assert not auto_compile.use_compiled_step(model, default, (1, False), torch.device("cpu"))
    assert w.stride() == (1, w.shape[0])                       # the eager step's column-major layout again


def test_the_default_stays_eager_off_the_cpu():
    model = _model()
    model._decode_times = {(1, False): auto_compile.StepTimes(eager_s=1e9)}
    assert not auto_compile.use_compiled_step(model, GenerationConfig(), (1, False), torch.device("meta"))
    assert auto_compile.use_compiled_step(model, GenerationConfig(), (1, False), torch.device("cpu"))


def test_a_context_whose_cache_outweighs_the_weights_is_not_compiled_by_default():
    small = _model()                               # 32 slots: a cache far lighter than the weights
    torch.manual_seed(0)
    long = build_model(get_preset("llama-tiny", vocab_size=50, context_length=32768)).eval()
    assert auto_compile.static_cache_fits(small, 1) and not auto_compile.static_cache_fits(long, 1)
    for model in (small, long):
        model._decode_times = {(1, False): auto_compile.StepTimes(eager_s=1e9)}
    assert auto_compile.use_compiled_step(small, GenerationConfig(), (1, False), torch.device("cpu"))
    assert not auto_compile.use_compiled_step(long, GenerationConfig(), (1, False), torch.device("cpu"))
    assert auto_compile.use_compiled_step(long, GenerationConfig(compile=True), (1, False), torch.device("cpu"))
