import math

import pytest
import torch
import torch.nn.functional as F

from lmforge.config import get_preset
from lmforge.errors import DataError, LmforgeError
from lmforge.evaluate.perplexity import perplexity, perplexity_of_ids
from lmforge.model import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_preset("gpt-tiny", vocab_size=30, context_length=16)).eval()


def _direct_nll(model, ids: list[int], scored_from: int = 1) -> float:
    """Mean NLL of ids[scored_from:] each predicted from the full history (fits in the context)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0]
    nll = F.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
    return nll[scored_from - 1:].mean().item()


def test_single_window_equals_direct_computation(model):
    ids = torch.randint(0, 30, (17,)).tolist()
    out = perplexity_of_ids(model, ids)
    assert out["tokens"] == 16 and out["windows"] == 1
    assert out["nll"] == pytest.approx(_direct_nll(model, ids), rel=1e-5)
    assert out["ppl"] == pytest.approx(math.exp(out["nll"]))


def test_sliding_window_scores_every_token_once(model):
    ids = torch.randint(0, 30, (60,)).tolist()
    for stride in (4, 8, 16):
        out = perplexity_of_ids(model, ids, stride=stride, batch_size=3)
        assert out["tokens"] == 59
    # hand check of the windowing for stride 8: window 2 covers ids[8:25] and scores targets 17..24
    # with at least 8 tokens of history; recompute those by hand
    out = perplexity_of_ids(model, ids, stride=8)
    total = 0.0
    prev_end = 1
    for begin in range(0, 59, 8):
        end = min(begin + 17, 60)
        window = ids[begin:end]
        with torch.no_grad():
            logits = model(torch.tensor([window[:-1]]))[0]
        nll = F.cross_entropy(logits, torch.tensor(window[1:]), reduction="none")
        n_new = end - max(prev_end, begin + 1)
        total += nll[-n_new:].sum().item() if n_new > 0 else 0.0
        prev_end = end
        if end == 60:
            break
    assert out["nll"] == pytest.approx(total / 59, rel=1e-5)


def test_errors(model):
    with pytest.raises(LmforgeError, match="stride=40 must be between 1 and the context length 16"):
        perplexity_of_ids(model, list(range(20)), stride=40)
    with pytest.raises(DataError, match="at least 2 tokens"):
        perplexity_of_ids(model, [1])


def test_text_perplexity_and_bits_per_byte(tiny_model_dir):
    from lmforge.api import load
    lm = load(tiny_model_dir, device="cpu")
    text = "The for statement is used to iterate over the elements of a sequence."
    out = perplexity(lm.module, lm.tokenizer, text, stride=16)
    assert out["tokens"] == len(lm.tokenizer.encode(text))          # eos prefix makes the first token scored
    assert out["bits_per_byte"] == pytest.approx(out["nll"] * out["tokens"] / math.log(2) / len(text))
    assert 1 < out["ppl"] < lm.config.vocab_size
    with pytest.raises(DataError, match="empty"):
        perplexity(lm.module, lm.tokenizer, "")
