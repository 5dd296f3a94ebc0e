"""Decoding with an encoder-decoder: encode the (right-padded) sources once, project the encoder
output into every cross attention's keys/values once, then decode target tokens over the
self-attention KV cache — greedily (num_beams=1) or with beam search.

    >>> translate(model, src_tok, tgt_tok, ["Hello world"], translation_config(num_beams=4))   # doctest: +SKIP
    ['你好，世界']

`translate` decodes summaries too (`summarize.py` calls it for encoder-decoders, with its own
options and defaults).
"""

from __future__ import annotations

import torch

from ..data.batching import pad_right
from ..data.pairs import source_ids
from ..errors import LmforgeError
from .beam import beam_search, best_hypotheses
from .core import GenerationConfig

# the GenerationConfig fields that apply to encoder-decoder decoding, and translation's own defaults
# (max_new_tokens is capped by the model's context); `lmforge translate`, `Model.translate` and the
# server's encoder-decoder requests start from these
TRANSLATE_OPTIONS = ("num_beams", "length_penalty", "max_new_tokens", "no_repeat_ngram_size")
TRANSLATE_DEFAULTS = {"num_beams": 4, "max_new_tokens": 1024, "no_repeat_ngram_size": 4}


def verb_config(verb: str, allowed: tuple[str, ...], defaults: dict, options: dict) -> GenerationConfig:
    """The decoding options of a verb that takes only the GenerationConfig fields `allowed`, over
    its `defaults` (translate, summarize)."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise LmforgeError(f"{verb} does not take {', '.join(unknown)}; its options are {', '.join(allowed)}")
    return GenerationConfig(**{**defaults, **options})


def translation_config(**options) -> GenerationConfig:
    """The decoding options of a translation: `TRANSLATE_OPTIONS` only, over `TRANSLATE_DEFAULTS`."""
    return verb_config("translate", TRANSLATE_OPTIONS, TRANSLATE_DEFAULTS, options)


@torch.inference_mode()
def generate_seq2seq_ids(model, source_ids: list[list[int]], *, bos_id: int, eos_id: int | None, pad_id: int = 0,
                         max_new_tokens: int | None = None, num_beams: int = 1, length_penalty: float = 1.0,
                         early_stopping: bool = True, no_repeat_ngram_size: int = 0, min_new_tokens: int = 0
                         ) -> tuple[list[list[int]], list[str]]:
    """Target ids (without <bos>/<eos>) and finish reasons for a batch of source id lists."""
    if num_beams < 1:
        raise LmforgeError(f"num_beams={num_beams} must be at least 1")
    config, K = model.config, num_beams
    device = next(model.parameters()).device
    ctx = config.context_length
    src, src_valid = pad_right([s[:ctx] for s in source_ids], pad_id)
    src, src_valid = src.to(device), src_valid.to(device)
    B = src.shape[0]
    max_new = min(max_new_tokens or ctx - 1, ctx - 1)           # slot 0 holds <bos>
    was_training = model.training
    model.eval()
    try:
        memory = model.encode(src, src_valid)                       # (B, S, d), once per source
        expand = torch.arange(B, device=device).repeat_interleave(K)
        memory_valid = src_valid[expand]                            # (B*K, S)
        model.setup_cache(B * K, 1 + max_new, memory=memory[expand])
        start = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)
        logits = model.decode(start, memory_valid=memory_valid, input_pos=torch.tensor([0], device=device))[:, -1]

        def step(tokens: torch.Tensor, origin: torch.Tensor, t: int) -> torch.Tensor:
            model.reorder_cache(origin)
            slot = torch.tensor([t + 1], device=device)
            return model.decode(tokens[:, None], memory_valid=memory_valid, input_pos=slot)[:, -1]

        result = beam_search(step, logits, K, max_new, eos_id, pad_id, length_penalty, early_stopping,
                             no_repeat_ngram_size, min(min_new_tokens, max_new))
    finally:
        model.clear_cache()
        model.train(was_training)
    return best_hypotheses(result, eos_id)


def translate(model, source_tokenizer, target_tokenizer, texts: list[str], gen: GenerationConfig | None = None, *,
              batch_size: int = 32, progress: bool = False) -> list[str]:
    """Translate (or summarise: any pair task) a list of texts with the decoding options `gen`
    (default: `translation_config()`); empty texts give ""."""
    from tqdm.auto import tqdm
    if model.config.family != "seq2seq":
        raise LmforgeError(f"this model is a {model.config.family}, not an encoder-decoder; translate needs a "
                           f"model trained with `lmforge train --task seq2seq`")
    gen = gen or translation_config()
    out = [""] * len(texts)
    todo = [i for i, t in enumerate(texts) if t.strip()]
    for start in tqdm(range(0, len(todo), batch_size), desc="translating", disable=not progress):
        chunk = todo[start: start + batch_size]
        src = [source_ids(source_tokenizer, texts[i], model.config.context_length) for i in chunk]
        ids, _ = generate_seq2seq_ids(model, src, bos_id=target_tokenizer.bos_id, eos_id=target_tokenizer.eos_id,
                                      pad_id=target_tokenizer.pad_id or 0, max_new_tokens=gen.max_new_tokens,
                                      num_beams=gen.num_beams, length_penalty=gen.length_penalty,
                                      no_repeat_ngram_size=gen.no_repeat_ngram_size,
                                      min_new_tokens=gen.min_new_tokens)
        for i, seq in zip(chunk, ids):
            out[i] = target_tokenizer.decode(seq)
    return out
