"""Beam search: a hand-checkable golden case, equivalence with greedy for one beam, and an
exhaustive search on a tiny model (which checks the cache reordering)."""

import itertools
import math

import pytest
import torch
import torch.nn as nn

from lmforge.config import ModelConfig, get_preset
from lmforge.errors import LmforgeError
from lmforge.generate import GenerationConfig, generate_ids
from lmforge.generate.beam import beam_generate_ids, beam_search
from lmforge.generate.seq2seq import generate_seq2seq_ids
from lmforge.model import build_model

EOS, A, B = 0, 1, 2        # the golden model's 3-token vocabulary
# next-token probabilities given the previous token (a bigram table; the prompt ends with token 3)
TABLE = {3: {A: 0.5, B: 0.4, EOS: 0.1},
         A: {A: 0.3, B: 0.3, EOS: 0.4},
         B: {A: 0.05, B: 0.05, EOS: 0.9}}


class BigramLM(nn.Module):
    """A decoder whose logits are log TABLE[previous token]: fixed, so the search is checkable by hand.
    It has the decoder's decoding interface; its "cache" is unused (each step only needs its token)."""

    def __init__(self):
        super().__init__()
        self.config = ModelConfig(vocab_size=3, context_length=16)
        logp = torch.full((4, 3), -30.0)
        for prev, row in TABLE.items():
            for tok, p in row.items():
                logp[prev, tok] = math.log(p)
        self.register_buffer("logp", logp)
        self.anchor = nn.Parameter(torch.zeros(()))       # gives the module a device
        self.reorders = []

    def forward(self, idx, **kw):
        out = self.logp[idx]                               # (B, T, 3)
        return out[:, -1:] if kw.get("last_only") else out

    def setup_cache(self, batch_size, max_len=None, dtype=None):
        pass

    def reorder_cache(self, index):
        self.reorders.append(index.tolist())

    def clear_cache(self):
        pass


def test_golden_beam_finds_what_greedy_misses():
    # greedy: A (0.5), then EOS (0.4)                    -> p = 0.20
    # beam 2: step 1 keeps A (0.5) and B (0.4); step 2's candidates: B EOS 0.36, A EOS 0.20, A A 0.15, A B 0.15
    #         -> two hypotheses ended among the top 2: stop; best is B EOS (p = 0.36)
    model = BigramLM()
    greedy, reasons, _ = generate_ids(model, [[3]], GenerationConfig(max_new_tokens=5, greedy=True), eos_id=EOS)
    assert greedy == [[A]] and reasons == ["eos"]
    beam, reasons, stats = generate_ids(model, [[3]], GenerationConfig(max_new_tokens=5, num_beams=2), eos_id=EOS)
    assert beam == [[B]] and reasons == ["eos"] and stats["new_tokens"] == 2
    # the prompt's cache row is copied to both beams; then both step-1 beams (A, B) extend beam row 0
    assert model.reorders == [[0, 0], [0, 0]]


def test_golden_beam_scores_and_length_penalty():
    model = BigramLM()
    logits = model.logp[[3, 3]]                               # (B*K = 2, V): prompt "3", two beams

    def step(tokens, origin, t):
        return model.logp[tokens]

    res = beam_search(step, logits, num_beams=2, max_new_tokens=5, eos_id=EOS, length_penalty=1.0)
    assert res.sequences[0, 0, :2].tolist() == [B, EOS] and res.sequences[0, 1, :2].tolist() == [A, EOS]
    torch.testing.assert_close(res.scores[0], torch.tensor([math.log(0.36) / 2, math.log(0.20) / 2]))
    assert res.ended[0].tolist() == [True, True] and res.lengths[0].tolist() == [2, 2]
    # with max_new_tokens=1 nothing ends: the running beams A (0.5) and B (0.4) are returned, A first
    res = beam_search(step, logits, num_beams=2, max_new_tokens=1, eos_id=EOS)
    assert res.sequences[0, :, 0].tolist() == [A, B] and res.ended[0].tolist() == [False, False]


@pytest.mark.parametrize("preset", ["gpt-tiny", "llama-tiny"])
def test_one_beam_is_greedy_and_batches_equal_single_prompts(preset):
    torch.manual_seed(0)
    model = build_model(get_preset(preset, vocab_size=50, init_std=0.2)).eval()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16]]
    greedy, _, _ = generate_ids(model, prompts, GenerationConfig(max_new_tokens=8, greedy=True), eos_id=2)
    one_beam, _, _ = beam_generate_ids(model, prompts, GenerationConfig(max_new_tokens=8, num_beams=1), eos_id=2)
    assert one_beam == greedy
    cfg = GenerationConfig(max_new_tokens=8, num_beams=3)
    batched, _, _ = generate_ids(model, prompts, cfg, eos_id=2)
    assert batched == [generate_ids(model, [p], cfg, eos_id=2)[0][0] for p in prompts]


def test_seq2seq_beam_search_is_exact_when_beams_cover_every_prefix():
    """With K >= V ** (L - 1) beams nothing is pruned: the result is the best sequence of an
    exhaustive search (score = sum log p / length), which needs correct cache reordering."""
    torch.manual_seed(0)
    V, L = 5, 3
    model = build_model(get_preset("seq2seq-tiny", vocab_size=V, pad_vocab_multiple=1, init_std=0.5)).eval()
    bos, eos = 1, 2

    def score(src, seq):
        with torch.no_grad():
            logp = model(torch.tensor([src]), torch.tensor([[bos] + seq[:-1]]))[0].log_softmax(-1)
        return sum(logp[i, t].item() for i, t in enumerate(seq)) / len(seq)

    sources = [[3, 4, 0, 2], [4, 2], [0, 0, 3, 2]]
    found, _ = generate_seq2seq_ids(model, sources, bos_id=bos, eos_id=eos, max_new_tokens=L, num_beams=V ** (L - 1))
    for src, got in zip(sources, found):
        candidates = [list(s) for n in range(1, L + 1) for s in itertools.product(range(V), repeat=n)
                      if eos not in s[:-1] and (s[-1] == eos or n == L)]
        best = max(candidates, key=lambda s: score(src, s))
        assert got == [t for t in best if t != eos]
    greedy, _ = generate_seq2seq_ids(model, sources, bos_id=bos, eos_id=eos, max_new_tokens=L)
    for src, got in zip(sources, greedy):                                   # one beam = step-by-step argmax
        seq = [bos]
        for _ in range(L):
            with torch.no_grad():
                nxt = int(model(torch.tensor([src]), torch.tensor([seq]))[0, -1].argmax())
            if nxt == eos:
                break
            seq.append(nxt)
        assert got == seq[1:]


def test_no_repeat_ngram_blocks_loops():
    from lmforge.generate.beam import repeated_ngram_mask
    seqs = torch.tensor([[5, 6, 7, 5, 6, 0], [1, 1, 1, 0, 0, 0]])
    assert repeated_ngram_mask(seqs, 5, 3, 10)[0].nonzero().flatten().tolist() == [7]   # "5 6" was followed by 7
    assert not repeated_ngram_mask(seqs, 5, 3, 10)[1].any()
    assert repeated_ngram_mask(seqs, 3, 2, 10)[1].nonzero().flatten().tolist() == [1]   # "1" was followed by 1
    loop = torch.full((4, 4), -30.0)                                  # token t is followed by t + 1 mod 3 ...
    for prev in range(4):
        loop[prev, (prev + 1) % 3] = math.log(0.6)
        loop[prev, (prev + 2) % 3] = math.log(0.39)

    def step(tokens, origin, t):
        return loop[tokens]
    free = beam_search(step, loop[[3, 3]], num_beams=2, max_new_tokens=9, eos_id=None)
    assert free.sequences[0, 0].tolist() == [1, 2, 0, 1, 2, 0, 1, 2, 0]              # ... a loop
    blocked = beam_search(step, loop[[3, 3]], num_beams=2, max_new_tokens=9, eos_id=None, no_repeat_ngram_size=2)
    for row in blocked.sequences[0].tolist():
        bigrams = list(zip(row, row[1:]))
        assert len(bigrams) == len(set(bigrams)) == 8
    with pytest.raises(Exception, match="no_repeat_ngram_size"):
        GenerationConfig(no_repeat_ngram_size=-1)


def test_beam_settings_are_checked():
    with pytest.raises(LmforgeError, match="num_beams=0"):
        GenerationConfig(num_beams=0)
    with pytest.raises(LmforgeError, match="repetition-penalty is not supported with beam search"):
        GenerationConfig(num_beams=2, repetition_penalty=1.2)
    model = build_model(get_preset("seq2seq-tiny", vocab_size=20))
    with pytest.raises(LmforgeError, match="generate needs a decoder.*lmforge translate"):
        generate_ids(model, [[3]], GenerationConfig(max_new_tokens=2))
