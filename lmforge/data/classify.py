"""Classification inputs: labelled texts encoded per model family, and padded batches of them.

Inputs are encoded per family: an encoder sees `<bos> text <eos>` (<bos> is the [CLS]
position it pools), or `<bos> text <eos> pair <eos>` with segment ids 0 / 1 for sentence
pairs; a decoder sees `text <eos>` (or `text <eos> pair <eos>`) and pools the last real token.
Texts longer than the context are truncated (the pair's longer side first).
"""

from __future__ import annotations

import torch

from .batching import pad_right


def sort_labels(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order, others alphabetically."""
    try:
        return sorted(labels, key=lambda x: (float(x), x))
    except ValueError:
        return sorted(labels)


def encode_for_classification(tokenizer, family: str, texts: list[str], pairs: list[str] | None,
                              max_len: int) -> tuple[list[list[int]], list[list[int]], int]:
    """(ids, segment ids, number truncated) for each text (and pair) in the family's layout."""
    bos = [tokenizer.bos_id] if family == "encoder" and tokenizer.bos_id is not None else []
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    first = tokenizer.encode_batch(texts)
    second = tokenizer.encode_batch(pairs) if pairs is not None else [None] * len(first)
    ids, types, truncated = [], [], 0
    for a, b in zip(first, second):
        budget = max_len - len(bos) - len(eos) * (1 if b is None else 2)
        n = len(a) + (len(b) if b is not None else 0)
        if n > budget:
            truncated += 1
            if b is None:
                a = a[:budget]
            else:
                keep_a = max(budget - len(b), budget // 2)
                a = a[:keep_a]
                b = b[: budget - len(a)]
        seg_a = bos + a + eos
        seg_b = (b + eos) if b is not None else []
        ids.append(seg_a + seg_b)
        types.append([0] * len(seg_a) + [1] * len(seg_b))
    return ids, types, truncated


def collate_examples(ids: list[list[int]], types: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    x, valid = pad_right(ids, pad_id)
    t, _ = pad_right(types, 0)
    return {"x": x, "valid": valid, "types": t}
