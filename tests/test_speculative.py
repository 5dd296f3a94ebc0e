import json

import pytest
import torch

from lmforge.api import load
from lmforge.config import get_preset
from lmforge.errors import LmforgeError
from lmforge.generate import GenerationConfig, generate_ids
from lmforge.generate.speculative import accept_drafts, check_draft, speculative_generate_ids
from lmforge.model import build_model
from lmforge.tokenizers import Tokenizer


def _pair(preset: str, vocab: int = 40):
    torch.manual_seed(0)
    target = build_model(get_preset(preset, vocab_size=vocab)).eval()
    torch.manual_seed(1)
    draft = build_model(get_preset(preset, vocab_size=vocab, n_layer=1)).eval()
    return target, draft


@pytest.mark.parametrize("preset", ["gpt-tiny", "llama-tiny"])
def test_speculative_greedy_gives_the_tokens_of_plain_greedy(preset):
    target, draft = _pair(preset)
    for k in (2, 5):
        cfg = GenerationConfig(max_new_tokens=24, greedy=True, draft_tokens=k)
        for prompt in ([5, 6, 7], [9]):
            plain, _, _ = generate_ids(target, [prompt], cfg)
            fast, _, stats = speculative_generate_ids(target, draft, [prompt], cfg)
            assert fast == plain and stats["new_tokens"] == 24
            assert 0.0 <= stats["acceptance_rate"] <= 1.0 and stats["model_steps"] < 24
    _, _, itself = speculative_generate_ids(target, target, [[5]], GenerationConfig(max_new_tokens=21, greedy=True,
                                                                                    draft_tokens=4))
    assert itself["acceptance_rate"] == 1.0 and itself["model_steps"] == 4          # 20 tokens, 5 per step


def test_speculative_greedy_on_a_trained_model_with_a_different_draft(tiny_model_dir):
    lm = load(tiny_model_dir, device="cpu")
    torch.manual_seed(3)
    draft = build_model(get_preset("gpt-tiny", vocab_size=lm.config.vocab_size, context_length=32, n_layer=1)).eval()
    prompt = lm.tokenizer.encode("The ")
    cfg = GenerationConfig(max_new_tokens=24, greedy=True, draft_tokens=3)
    assert speculative_generate_ids(lm.module, draft, [prompt], cfg)[0] == generate_ids(lm.module, [prompt], cfg)[0]


def test_verification_preserves_the_model_distribution():
    """Statistical check of the accept / resample rule on a 4-token vocabulary: whatever the
    draft proposes, the first emitted token is distributed as p_1, and after a kept draft the
    next one as p_2 (tolerance ~5 standard errors at N = 200k)."""
    g = torch.Generator().manual_seed(0)
    N, V = 200_000, 4
    p = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]])     # (k+1, V)
    q = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]])                        # (k, V)
    drafts = torch.multinomial(q, N, replacement=True, generator=g).T                           # (N, k) ~ q
    kept, nxt = accept_drafts(p.expand(N, -1, -1), q.expand(N, -1, -1), drafts, greedy=False, generator=g)
    first = torch.where(kept >= 1, drafts[:, 0], nxt)
    torch.testing.assert_close(torch.bincount(first, minlength=V) / N, p[0], atol=6e-3, rtol=0)
    second = torch.where(kept >= 2, drafts[:, 1], nxt)[kept >= 1]
    torch.testing.assert_close(torch.bincount(second, minlength=V) / len(second), p[1], atol=8e-3, rtol=0)
    bonus = nxt[kept == 2]
    torch.testing.assert_close(torch.bincount(bonus, minlength=V) / len(bonus), p[2], atol=1e-2, rtol=0)
    accept_rate = (kept >= 1).float().mean().item()                 # sum_x min(p(x), q(x)) = 0.1+0.2+0.2+0.1
    assert abs(accept_rate - 0.6) < 5e-3


def test_speculative_sampling_runs_and_reports(tiny_model_dir):
    lm = load(tiny_model_dir, device="cpu")
    cfg = GenerationConfig(max_new_tokens=20, temperature=0.9, top_k=20, seed=0, draft_tokens=3)
    ids, reasons, stats = speculative_generate_ids(lm.module, lm.module, [lm.tokenizer.encode("The ")], cfg,
                                                   eos_id=lm.tokenizer.eos_id)
    assert stats["acceptance_rate"] == 1.0                           # p == q: every draft is kept
    again = speculative_generate_ids(lm.module, lm.module, [lm.tokenizer.encode("The ")], cfg,
                                     eos_id=lm.tokenizer.eos_id)[0]
    assert again == ids                                              # seeded


def test_draft_errors(tiny_model_dir, bpe_data):
    lm = load(tiny_model_dir, device="cpu")
    with pytest.raises(LmforgeError, match="different tokenizer"):
        check_draft(lm.tokenizer, Tokenizer.load(bpe_data))
    cfg = GenerationConfig(max_new_tokens=4)
    with pytest.raises(LmforgeError, match="one prompt at a time"):
        speculative_generate_ids(lm.module, lm.module, [[5], [6]], cfg)
    with pytest.raises(LmforgeError, match="repetition-penalty"):
        speculative_generate_ids(lm.module, lm.module, [[5]], GenerationConfig(repetition_penalty=1.2))
    other = build_model(get_preset("gpt-tiny", vocab_size=99))
    with pytest.raises(LmforgeError, match="vocabulary"):
        speculative_generate_ids(lm.module, other, [[5]], cfg)


def test_generate_verb_with_a_draft(tiny_model_dir, capsys):
    from lmforge.cli import main
    args = ["generate", str(tiny_model_dir), "The ", "--draft", str(tiny_model_dir), "--draft-tokens", "3",
            "--greedy", "--max-new-tokens", "10", "--device", "cpu"]
    assert main(args + ["--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["acceptance_rate"] == 1.0 and row["tokens"] <= 10
    assert main(args) == 0
    assert "drafted tokens accepted (100.0%)" in capsys.readouterr().err
