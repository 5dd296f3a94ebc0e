import pytest
import torch

from lmforge.api import load
from lmforge.config import get_preset
from lmforge.errors import LmforgeError
from lmforge.generate import GenerationConfig, generate, generate_ids
from lmforge.generate.sampling import apply_repetition_penalty, filter_top_k, filter_top_p, sample_next
from lmforge.model import build_model


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load(tiny_model_dir, device="cpu")


def _greedy_reference(model, prompt: list[int], n: int) -> list[int]:
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


@pytest.mark.parametrize("preset", ["gpt-tiny", "llama-tiny"])
def test_batched_greedy_with_padding_equals_one_by_one_full_forward(preset):
    torch.manual_seed(0)
    model = build_model(get_preset(preset, vocab_size=50)).eval()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16]]
    ids, reasons, stats = generate_ids(model, prompts, GenerationConfig(max_new_tokens=12, greedy=True))
    for p, got in zip(prompts, ids):
        assert got == _greedy_reference(model, p, 12)
    assert reasons == ["length"] * 3 and stats["new_tokens"] == 12


def test_sampling_filters_golden():
    logits = torch.tensor([[1.0, 4.0, 2.0, 3.0]])
    assert filter_top_k(logits, 2).tolist() == [[float("-inf"), 4.0, float("-inf"), 3.0]]
    # probabilities ~ [0.032, 0.644, 0.087, 0.237]: top_p 0.7 keeps the two largest (0.644 then 0.881)
    kept = torch.isfinite(filter_top_p(logits, 0.7))
    assert kept.tolist() == [[False, True, False, True]]
    assert torch.isfinite(filter_top_p(logits, 0.5)).tolist() == [[False, True, False, False]]
    assert sample_next(logits, temperature=0.0).tolist() == [1]
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, 1.0, top_k=1, generator=g).item() for _ in range(20)}
    assert draws == {1}


def test_repetition_penalty_golden():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 1.0]]


def test_seed_makes_sampling_reproducible(lm):
    a = lm.generate("The ", max_new_tokens=20, temperature=1.0, seed=3)
    b = lm.generate("The ", max_new_tokens=20, temperature=1.0, seed=3)
    c = lm.generate("The ", max_new_tokens=20, temperature=1.0, seed=4)
    assert a == b and a != c


def test_stop_strings_and_streaming(lm):
    pieces = []
    full = generate(lm.module, lm.tokenizer, "The ", GenerationConfig(max_new_tokens=25, greedy=True))[0]
    assert len(full.text) >= 3
    stop = full.text[2:4]
    out = generate(lm.module, lm.tokenizer, "The ", GenerationConfig(max_new_tokens=25, greedy=True, stop=[stop]),
                   stream=lambda i, piece: pieces.append(piece))[0]
    assert out.finish_reason == "stop" and stop not in out.text and full.text.startswith(out.text)
    assert "".join(pieces) == out.text


def test_eos_ends_a_sequence():
    torch.manual_seed(0)
    model = build_model(get_preset("gpt-tiny", vocab_size=20)).eval()
    with torch.no_grad():                                  # make token 2 (eos) the only likely choice
        model.lm_head.weight.zero_()
        model.lm_head.weight[2] += 1.0
        model.transformer.norm.bias.fill_(1.0)
    ids, reasons, _ = generate_ids(model, [[5, 6]], GenerationConfig(max_new_tokens=5, greedy=True), eos_id=2)
    assert ids == [[]] and reasons == ["eos"]


def test_prompt_longer_than_context(lm):
    long_prompt = "x" * 100                                     # context is 32
    with pytest.raises(LmforgeError, match=r"prompt has 100 tokens but the model's context is 32.*--truncate-prompt"):
        lm.generate(long_prompt, max_new_tokens=5)
    with pytest.warns(UserWarning, match="truncated"):
        out = lm.generate(long_prompt, max_new_tokens=5, truncate_prompt=True, greedy=True)
    assert isinstance(out, str)
    with pytest.warns(UserWarning, match="generating at most"):      # beam search stays within the window
        lm.generate("The", max_new_tokens=100, num_beams=2)
    assert len(lm.generate("The", max_new_tokens=100, greedy=True, ignore_eos=True)) == 100   # plain goes past


def test_bad_generation_settings():
    with pytest.raises(LmforgeError, match="top_p"):
        GenerationConfig(top_p=0.0)
    with pytest.raises(LmforgeError, match="temperature"):
        GenerationConfig(temperature=-1)
    with pytest.raises(LmforgeError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)


def test_batch_of_text_prompts(lm):
    outs = lm.generate(["The ", "A", ""], max_new_tokens=8, greedy=True)
    assert len(outs) == 3
    assert outs[0] == lm.generate("The ", max_new_tokens=8, greedy=True)


def _tiny(seed: int):
    torch.manual_seed(seed)
    return build_model(get_preset("llama-tiny", vocab_size=50, context_length=32)).eval()


def test_a_decode_step_attends_to_the_written_cache_slots_only():
    """Each step gets `key_valid` for the slots written so far (the prompt's and the tokens fed
    since), not for the whole preallocated cache, so attention reads and scores only those; the
    tokens are the ones a full forward over the text picks."""
    model = _tiny(0)
    seen = []
    model.register_forward_pre_hook(lambda m, args, kw: seen.append(kw.get("key_valid")), with_kwargs=True)
    ids, _, _ = generate_ids(model, [[5, 6, 7, 8]], GenerationConfig(max_new_tokens=6, greedy=True, compile=False))
    keys = [k.shape[-1] for k in seen if k is not None]
    assert keys == [4 + 6, 5, 6, 7, 8, 9]            # the prefill sees the whole cache, each step one slot more
    text = [5, 6, 7, 8] + ids[0]
    with torch.no_grad():
        full = model(torch.tensor([text[:-1]]))[0, 3:].argmax(-1)
    assert full.tolist() == ids[0]


@pytest.mark.slow
def test_compiled_decode_step_gives_the_same_tokens():
    model = _tiny(0)
    prompts = [[5, 6, 7, 8], [9, 10]]
    with torch.no_grad():
        logits = model(torch.tensor(prompts[:1]))
    eager, _, _ = generate_ids(model, prompts, GenerationConfig(max_new_tokens=10, greedy=True))
    fast, _, _ = generate_ids(model, prompts, GenerationConfig(max_new_tokens=10, greedy=True, compile=True))
    again, _, _ = generate_ids(model, prompts, GenerationConfig(max_new_tokens=6, greedy=True, compile=True))
    assert fast == eager and again == [e[:6] for e in eager]
    assert model.transformer.blocks[0].attn.kv_cache.k_cache.shape[2] == 33     # static: the context and one slot more
    with torch.no_grad():                           # a plain forward (perplexity, scoring) ignores the kept cache
        torch.testing.assert_close(model(torch.tensor(prompts[:1])), logits)


def test_compiled_steps_without_guards_are_one_per_model_and_shape():
    """The CPU's compiled steps run without dynamo's guards (`generate.unguarded`): each model and
    each shape (rows, rolling cache) must get a graph of its own, or a step would run another's."""
    greedy = dict(max_new_tokens=10, greedy=True)
    first, second = _tiny(1), _tiny(0)
    runs = [(first, [[5, 6, 7, 8]], {}), (second, [[5, 6, 7, 8], [9, 10]], {}),
            (second, [[9, 10, 11]], {}), (second, [[5, 6, 7, 8]], {"max_new_tokens": 40})]   # 40: past the window
    for model, prompts, extra in runs:
        cfg = {**greedy, **extra}
        eager, _, _ = generate_ids(model, prompts, GenerationConfig(**cfg, compile=False))
        fast, _, _ = generate_ids(model, prompts, GenerationConfig(**cfg, compile=True))
        assert fast == eager
        if extra:       # past the window the rotary tables grew: a new signature, the other copies dropped
            assert set(second._compiled_decode_step) == {(1, True)}
        elif model is second:
            assert (len(prompts), False) in second._compiled_decode_step


def test_a_model_changed_after_compiling_is_compiled_again():
    """A hook added to the model (a forward hook pushing token 7 to the top) or a weight of another
    dtype changes its signature: the next run compiles anew, as dynamo's guards would have made it."""
    model, prompts = _tiny(0), [[5, 6, 7, 8]]
    cfg = GenerationConfig(max_new_tokens=6, greedy=True, compile=True)
    generate_ids(model, prompts, cfg)
    before = model._compiled_decode_step[(1, False)]

    def push_seven(module, args, out):
        out = out.clone()
        out[..., 7] += 1e4
        return out
    handle = model.lm_head.register_forward_hook(push_seven)
    hooked, _, _ = generate_ids(model, prompts, cfg)
    assert hooked == [[7] * 6] and model._compiled_decode_step[(1, False)] is not before
    handle.remove()
    model.to(torch.bfloat16)
    eager, _, _ = generate_ids(model, prompts, GenerationConfig(max_new_tokens=6, greedy=True, compile=False))
    fast, _, _ = generate_ids(model, prompts, cfg)
    assert fast == eager and next(model.parameters()).dtype == torch.bfloat16
