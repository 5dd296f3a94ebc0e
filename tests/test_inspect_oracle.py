"""`lmforge.inspect` against the references, on the same weights: TransformerLens (its
`TransformerBridge` over the model exported to Hugging Face, raw weights: no folding, no
centering) for every hook point, the logit lens, direct logit attribution and activation
patching, on a GPT-2-kind and a Llama-kind model; Captum's `IntegratedGradients` for input
attribution on a classifier. Prompts are random strings (seeded), not chosen to flatter."""

from __future__ import annotations

import random

import pytest
import torch

from lmforge.api import Model
from lmforge.config import get_preset
from lmforge.model import build_model
from lmforge.tokenizers import Tokenizer

TOL = 1e-4
ALPHABET = "abcdefghijklmnopqrstuvwxyz ,."


def random_text(n: int, seed: int) -> str:
    return "".join(random.Random(seed).choices(ALPHABET, k=n))


def random_model(preset: str, tokenizer_dir, **kw) -> Model:
    """A model with random weights, its norms and biases moved off their 1 / 0 init so they count."""
    tokenizer = Tokenizer.load(tokenizer_dir)
    torch.manual_seed(0)
    config = get_preset(preset, vocab_size=tokenizer.vocab_size, **kw)
    module = build_model(config).eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return Model(module, config, tokenizer)


@pytest.fixture(scope="module", params=["gpt-tiny", "llama-tiny"])
def pair(request, char_data, tmp_path_factory):
    """(lmforge model, TransformerLens bridge over its Hugging Face export)."""
    pytest.importorskip("transformer_lens")
    import transformers
    from transformer_lens.model_bridge import TransformerBridge
    lm = random_model(request.param, char_data)
    hf_dir = tmp_path_factory.mktemp("hf") / request.param
    lm.save(hf_dir, format="hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="eager").eval()
    bridge = TransformerBridge.boot_transformers(str(hf_dir), hf_model=hf, device="cpu",
                                                 tokenizer=transformers.AutoTokenizer.from_pretrained(hf_dir))
    bridge.enable_compatibility_mode(no_processing=True)
    bridge.set_use_attn_result(True)
    return lm, bridge


def ids_of(lm: Model, text: str) -> torch.Tensor:
    return torch.tensor([lm.tokenizer.encode(text, bos=lm.tokenizer.add_bos)])


def test_every_hook_point_equals_transformer_lens(pair):
    lm, bridge = pair
    text = random_text(23, 1)
    trace = lm.trace(text)
    logits, cache = bridge.run_with_cache(ids_of(lm, text))
    assert len(trace.names) >= 30 and trace.tokens == [lm.tokenizer.decode([i]) for i in ids_of(lm, text)[0].tolist()]
    worst = {}
    for name in trace.names:
        ours, theirs = trace[name], cache[name][0]
        assert ours.shape == theirs.shape, name
        if name.endswith("hook_attn_scores"):                       # masked entries are -inf in both
            assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs)), name
            ours, theirs = ours[torch.isfinite(ours)], theirs[torch.isfinite(theirs)]
        worst[name] = float((ours - theirs).abs().max())
    worst["logits"] = float((trace.logits - logits[0].detach()).abs().max())
    assert max(worst.values()) < TOL, sorted(worst.items(), key=lambda kv: -kv[1])[:5]


def test_logit_lens_equals_transformer_lens(pair):
    from transformer_lens.tools.analysis.logit_lens import logit_lens
    lm, bridge = pair
    text = random_text(19, 2)
    lens = lm.logit_lens(text, top_k=4)
    ids = ids_of(lm, text)
    theirs = logit_lens(bridge, ids, positions=None, return_type="probs")           # full vocabulary
    assert lens.layers == theirs.labels
    probs = theirs.readout.values[:, 0]                                                # (L+1, T, vocab)
    top = probs.topk(4, dim=-1)
    assert (lens.top_probs - top.values).abs().max() < TOL and torch.equal(lens.top_ids, top.indices)
    nxt = ids[0, 1:]
    assert (lens.expected_prob[:, :-1] - probs[:, :-1].gather(-1, nxt[None, :, None].expand(len(probs), -1, 1))[..., 0]
            ).abs().max() < TOL
    ranks = logit_lens(bridge, ids[:, :-1], positions=None, targets=ids[:, 1:]).rank_trajectory()[:, 0]
    assert torch.equal(lens.expected_rank[:, :-1], ranks)


def test_direct_logit_attribution_equals_transformer_lens(pair):
    lm, bridge = pair
    text = random_text(17, 3)
    answer, wrong = "e", "t"
    attr = lm.dla(text, answer=answer, wrong=wrong, position=-1)
    _, cache = bridge.run_with_cache(ids_of(lm, text))
    heads = cache.stack_head_results(layer=-1, pos_slice=-1)                           # (L*H, 1, d)
    heads = cache.apply_ln_to_stack(heads, layer=-1, pos_slice=-1)                     # centred / final scale
    a, w = lm.tokenizer.encode(answer)[0], lm.tokenizer.encode(wrong)[0]
    direction = lm.module.transformer.norm.weight * (lm.module.lm_head.weight[a] - lm.module.lm_head.weight[w])
    theirs = (heads[:, 0] @ direction.detach()).view(attr.heads.shape)
    assert (attr.heads - theirs).abs().max() < TOL
    assert abs(attr.total() - attr.logit) < TOL                    # the pieces add up to the logit difference


def test_activation_patching_equals_transformer_lens(pair):
    from transformer_lens import patching
    lm, bridge = pair
    clean = random_text(15, 4)
    corrupted = clean[:6] + ("x" if clean[6] != "x" else "y") + clean[7:]
    change = lm.trace(clean, names=[]).logits[-1] - lm.trace(corrupted, names=[]).logits[-1]
    by_change = sorted(ALPHABET, key=lambda c: -float(change[lm.tokenizer.encode(c)[0]]))
    answer, wrong = by_change[0], by_change[-1]                      # the letters the corruption moves most
    ours = lm.patch(clean, corrupted, answer=answer, wrong=wrong)
    a, w = lm.tokenizer.encode(answer)[0], lm.tokenizer.encode(wrong)[0]

    def metric(out):
        diff = out[0, -1, a] - out[0, -1, w]
        return (diff - ours.corrupted_diff) / (ours.clean_diff - ours.corrupted_diff)

    _, clean_cache = bridge.run_with_cache(ids_of(lm, clean))
    bad = ids_of(lm, corrupted)
    resid = patching.get_act_patch_resid_pre(bridge, bad, clean_cache, metric)
    heads = patching.get_act_patch_attn_head_out_all_pos(bridge, bad, clean_cache, metric)
    assert (ours.resid - resid).abs().max() < TOL and (ours.heads - heads).abs().max() < TOL
    assert ours.resid[0, 6] == pytest.approx(1.0, abs=TOL)            # the corrupted position carries it all


def test_integrated_gradients_equal_captum(char_data):
    captum = pytest.importorskip("captum.attr")
    lm = random_model("bert-tiny", char_data, labels=["neg", "pos"])
    text = "a fine cat"
    steps = 24
    ours = lm.attribute(text, method="ig", steps=steps, target="pos")
    ids = torch.tensor([lm.tokenizer.encode(text, bos=True, eos=True)])
    assert ours.tokens[0] == "<bos>" and len(ours.tokens) == ids.shape[1]
    x = lm.module.transformer.tok_emb(ids).detach()

    def f(emb):                                                       # the classifier's "pos" logit from embeddings
        with lm.patched({"hook_embed": lambda a, name: emb}):
            return lm.module(ids.expand(len(emb), -1), head="classify")[:, 1]

    theirs = captum.IntegratedGradients(f).attribute(x, baselines=torch.zeros_like(x), n_steps=steps,
                                                     method="gausslegendre", internal_batch_size=8)
    assert (ours.attributions - theirs[0]).abs().max() < TOL
    assert abs(ours.delta) <= 0.01 * abs(ours.output - ours.baseline_output)       # completeness within 1%
    gxi = lm.attribute(text, method="gxi", target="pos")
    saliency = captum.InputXGradient(f).attribute(x.clone().requires_grad_(True))
    assert (gxi.attributions - saliency[0].detach()).abs().max() < TOL
