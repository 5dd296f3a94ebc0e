"""Perplexity of a causal LM on a text, with a sliding window (Hugging Face's recipe).

Windows of `context_length` tokens start every `stride` tokens; each window scores only the
tokens not scored by the previous one, so with stride < context every token after the first
window is predicted from at least `context - stride` tokens of history.

    nll = sum of -log p(token | history) over scored tokens;  ppl = exp(nll / n_scored)
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError, LmforgeError


@torch.inference_mode()
def scored_logprobs(model, ids: list[int] | torch.Tensor, *, stride: int | None = None, batch_size: int = 8,
                    progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """log p(ids[i] | history) for every i >= 1 (float32, len(ids) - 1), whether each token was the
    model's most likely one, and the number of windows (sliding window as in the module doc)."""
    if model.config.family != "decoder":
        raise ConfigError(f"perplexity needs a decoder (a causal language model), but this model is a "
                          f"{model.config.family}; evaluate an encoder-decoder with `lmforge translate --file TABLE "
                          f"--target-column COL` (BLEU, chrF), a classifier with `lmforge classify --file TABLE "
                          f"--label-column COL`")
    ids = torch.as_tensor(ids, dtype=torch.long)
    T = model.config.context_length
    stride = stride or T
    if not 0 < stride <= T:
        raise LmforgeError(f"stride={stride} must be between 1 and the context length {T}")
    if len(ids) < 2:
        raise DataError(f"need at least 2 tokens to score, got {len(ids)}; give a longer text")
    device = next(model.parameters()).device
    windows: list[tuple[int, int, int]] = []          # (begin, end, number of targets scored)
    prev_end = 1                                      # token 0 has no history: never scored
    for begin in range(0, len(ids) - 1, stride):
        end = min(begin + T + 1, len(ids))            # inputs ids[begin:end-1], targets ids[begin+1:end]
        n_new = end - max(prev_end, begin + 1)
        if n_new > 0:
            windows.append((begin, end, n_new))
        prev_end = end
        if end == len(ids):
            break
    was_training = model.training
    model.eval()
    logprobs, greedy = torch.zeros(len(ids) - 1), torch.zeros(len(ids) - 1, dtype=torch.bool)
    for i in tqdm(range(0, len(windows), batch_size), desc="scoring", disable=not progress):
        chunk = windows[i: i + batch_size]
        L = max(e - b - 1 for b, e, _ in chunk)
        x = torch.zeros(len(chunk), L, dtype=torch.long)
        for r, (b, e, _) in enumerate(chunk):
            x[r, : e - b - 1] = ids[b: e - 1]
        logp = torch.log_softmax(model(x.to(device)).float(), dim=-1).cpu()      # (B, L, V)
        for r, (b, e, n_new) in enumerate(chunk):
            n = e - b - 1
            rows, targets = logp[r, n - n_new: n], ids[e - n_new: e]
            logprobs[e - n_new - 1: e - 1] = rows.gather(-1, targets[:, None]).squeeze(-1)
            greedy[e - n_new - 1: e - 1] = rows.argmax(-1) == targets
    model.train(was_training)
    return logprobs, greedy, len(windows)


def perplexity_of_ids(model, ids: list[int] | torch.Tensor, *, stride: int | None = None, batch_size: int = 8,
                      progress: bool = False) -> dict[str, float]:
    logprobs, _, n_windows = scored_logprobs(model, ids, stride=stride, batch_size=batch_size, progress=progress)
    mean = -float(logprobs.double().sum()) / len(logprobs)
    return {"nll": mean, "ppl": math.exp(min(mean, 50.0)), "tokens": len(logprobs), "windows": n_windows,
            "stride": stride or model.config.context_length}


def perplexity(model, tokenizer, text: str, *, stride: int | None = None, batch_size: int = 8,
               progress: bool = False) -> dict[str, float]:
    """Perplexity of `text`; the text is preceded by end-of-text (the document separator the
    model saw in training), so its first token is scored too. Adds bits per byte."""
    if not text:
        raise DataError("the text to evaluate is empty; give a file with text")
    ids = tokenizer.encode(text)
    if tokenizer.eos_id is not None:
        ids = [tokenizer.eos_id] + ids
    out = perplexity_of_ids(model, ids, stride=stride, batch_size=batch_size, progress=progress)
    n_bytes = len(text.encode("utf-8"))
    out["bits_per_byte"] = out["nll"] * out["tokens"] / math.log(2) / n_bytes
    out["bytes"] = n_bytes
    return out


def read_text_file(path: str | Path) -> str:
    from ..fileio import read_text
    return read_text(path)
