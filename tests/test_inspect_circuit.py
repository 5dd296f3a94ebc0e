"""A planted circuit, found by the tools. A 2-layer, 4-head model is trained (by lmforge's own
trainer) on lines of a random string of random length written twice ("kqzvmkqzvm"): the first
copy cannot be predicted, the second can, but only by an induction circuit — look for the last
time the current letter appeared and copy the letter that followed it — since no fixed offset
finds the first copy when the length varies. (The letters of a string are distinct, so that
the first copy holds no repeats for the circuit to misfire on.)

`heads` must find the induction head(s) in layer 1; ablating them through `patched` must break
the copying and nothing else; `patch` must localise the answer to them. With every line of the
same length the model copies by position instead (a layer-0 head looking a fixed distance
back), which `heads` does not mistake for an induction head on another length."""

from __future__ import annotations

import random
import string
import time

import pytest
import torch
import torch.nn.functional as F

import lmforge

ALPHABET = string.ascii_lowercase


def copy_strings(n: int, lengths: tuple[int, int], seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.sample(ALPHABET, rng.randint(*lengths))) for _ in range(n)]


def train_copier(root, lengths: tuple[int, int], steps: int) -> tuple[lmforge.Model, float]:
    """A model trained on 20,000 lines `s + s` (len(s) in `lengths`), and the training time."""
    from lmforge.data.shards import PrepareConfig, prepare
    from lmforge.options import build_flat
    from lmforge.train import TrainConfig, train
    corpus = root / "lines.txt"
    corpus.write_text("".join(s + s + "\n" for s in copy_strings(20_000, lengths, 0)), encoding="utf-8")
    prepare(PrepareConfig(inputs=[str(corpus)], out=str(root / "data"), tokenizer="char", val_fraction=0.05,
                          progress=False))
    start = time.perf_counter()
    train(build_flat(TrainConfig, dict(
        data=str(root / "data"), out=str(root / "model"), preset="gpt-tiny", n_head=4, d_model=64, context_length=32,
        batch_size=32, max_steps=steps, lr=3e-3, warmup_steps=100, eval_interval=steps, eval_iters=2,
        log_interval=100, sample_interval=0, progress=False, device="cpu", seed=0)))
    return lmforge.load(root / "model", device="cpu"), time.perf_counter() - start


@pytest.fixture(scope="session")
def copier(tmp_path_factory):
    return train_copier(tmp_path_factory.mktemp("copier"), (3, 12), 1000)


def half_losses(lm: lmforge.Model, strings: list[str]) -> tuple[float, float]:
    """Mean loss (nats) on letters 2..n of the first copy and of the second copy of each line."""
    first, second = [], []
    for s in strings:
        ids = torch.tensor(lm.tokenizer.encode("\n" + s + s + "\n"))
        with torch.no_grad():
            nll = F.cross_entropy(lm.module(ids[None, :-1])[0], ids[1:], reduction="none")
        n = len(s)                                  # target j is character j of "\n" + s + s + "\n"
        first.append(nll[1:n].mean())
        second.append(nll[n + 1: 2 * n].mean())
    return float(torch.stack(first).mean()), float(torch.stack(second).mean())


def induction_heads(lm: lmforge.Model, seq_len: int = 10):
    scores = lm.head_scores(seq_len=seq_len, alphabet=ALPHABET).induction
    return scores, [(i, h) for i in range(scores.shape[0]) for h in range(scores.shape[1]) if scores[i, h] > 0.6]


def test_the_model_learns_to_copy(copier):
    lm, seconds = copier
    first, second = half_losses(lm, copy_strings(200, (3, 12), 1))
    print(f"trained in {seconds:.0f} s; loss first copy {first:.3f}, second copy {second:.4f}")
    assert 3.0 < first < 3.5 and second < 0.1               # ~ln 26 nats, then ~0: the second copy is copied


def test_heads_find_the_induction_heads(copier):
    lm, _ = copier
    scores, found = induction_heads(lm)
    others = [float(scores[i, h]) for i in range(scores.shape[0]) for h in range(scores.shape[1]) if (i, h) not in found]
    print("induction scores", [[round(v, 3) for v in row] for row in scores.tolist()])
    assert found and all(layer == 1 for layer, _ in found)     # composition needs a head in layer 0 before it
    assert min(float(scores[x]) for x in found) > 3 * max(others)


def test_ablating_them_breaks_copying_and_nothing_else(copier):
    """Mean-ablate the induction heads: their output becomes what it is on average where there is
    nothing to copy (single strings), through `patched`."""
    lm, _ = copier
    _, found = induction_heads(lm)
    singles = [lm.trace("\n" + s + "\n", names=["blocks.1.attn.hook_z"]) for s in copy_strings(100, (3, 12), 2)]
    resting = torch.cat([t["blocks.1.attn.hook_z"] for t in singles]).mean(0)          # (heads, head_dim)

    def ablate(z, name):
        z = z.clone()
        for _, h in found:
            z[:, :, h] = resting[h]
        return z
    strings = copy_strings(200, (3, 12), 1)
    before = half_losses(lm, strings)
    with lm.patched({"blocks.1.attn.hook_z": ablate}):
        after = half_losses(lm, strings)
    print(f"ablating {found}: first copy {after[0] - before[0]:+.3f} nats, second copy {after[1] - before[1]:+.3f}")
    assert after[1] - before[1] > 1.0 and abs(after[0] - before[0]) < 0.1


def test_patching_localises_the_answer_to_them(copier):
    lm, _ = copier
    _, found = induction_heads(lm)
    s = "kqzvmtb"
    clean, corrupted = s + s[:-1], s[:-1] + "x" + s[:-1]          # the answer 'b' was 'x' in the corrupted line
    result = lm.patch(clean, corrupted, answer="b", wrong="x")
    print(result.table())
    assert result.clean_diff > 0 > result.corrupted_diff
    # in layer 1 the answer comes from the induction heads (in layer 0, from the head that moves
    # the letter before each position forward for them to match on)
    ranked = sorted(((float(result.heads[1, h]), (1, h)) for h in range(4)), reverse=True)
    assert {x for _, x in ranked[:len(found)]} == set(found) and sum(v for v, _ in ranked[:len(found)]) > 0.5
    assert result.resid[0, len(s) - 1] > 0.9                      # it starts at the corrupted letter


@pytest.mark.slow
def test_lines_of_one_length_are_copied_by_position(tmp_path):
    lm, _ = train_copier(tmp_path, (8, 8), 600)
    first, second = half_losses(lm, copy_strings(100, (8, 8), 1))
    assert second < 0.3                                           # it copies...
    scores, found = induction_heads(lm, seq_len=5)
    assert found == [] and float(scores.max()) < 0.3              # ...with no head that finds the previous copy
