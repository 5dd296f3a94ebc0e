"""The top of decoding: `generate_ids` picks plain decoding (`decode.py`), beam search
(`beam.py`) or speculative decoding (`speculative.py`); `generate` does it for text —
encoding prompts, streaming text as it is produced, cutting at stop strings.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import LmforgeError
from .beam import beam_generate_ids
from .core import Completion, GenerationConfig, encode_prompt
from .decode import decode_ids
from .json_mode import JsonState, json_table
from .speculative import speculative_generate_ids
from .text import StreamedText, find_stop


@torch.no_grad()
def generate_ids(model, prompt_ids: list[list[int]], cfg: GenerationConfig, *, eos_id: int | None = None,
                 pad_id: int = 0, on_tokens: Callable[[torch.Tensor], bool | None] | None = None,
                 device: torch.device | str | None = None, draft=None, json_states: list | None = None
                 ) -> tuple[list[list[int]], list[str], dict]:
    """Generate for a batch of token-id prompts: speculative decoding with a
    `draft` model, beam search when cfg.num_beams > 1, else plain sampling / greedy decoding. `on_tokens(next_ids (B,))`
    is called after every step; returning True stops everything (stop strings use this); beam
    search does not call it. Returns (generated ids per prompt, finish reasons, stats)."""
    if model.config.family != "decoder":
        raise LmforgeError(f"generate needs a decoder (GPT / Llama) model, not a {model.config.family}; use "
                           f"`lmforge translate` for encoder-decoders and `lmforge classify` for classifiers")
    if draft is not None:
        return speculative_generate_ids(model, draft, prompt_ids, cfg, eos_id=eos_id, pad_id=pad_id,
                                        on_tokens=on_tokens, device=device)
    if cfg.num_beams > 1:
        return beam_generate_ids(model, prompt_ids, cfg, eos_id=eos_id, pad_id=pad_id, device=device)
    return decode_ids(model, prompt_ids, cfg, eos_id=eos_id, pad_id=pad_id, on_tokens=on_tokens, device=device,
                      json_states=json_states)


def generate(model, tokenizer, prompts: list[str | list[int]] | str, cfg: GenerationConfig | None = None, *,
             stream: Callable[[int, str], None] | None = None, draft=None) -> list[Completion]:
    """Generate text for one prompt or a batch. `stream(index, text_piece)` receives text as
    it is produced (per prompt index; with beam search, the whole text once at the end, since
    the best beam is known only then). An empty prompt starts from the end-of-text token; a
    prompt may also be a list of token ids (e.g. a rendered chat). With a `draft` model (same
    tokenizer, smaller) decoding is speculative: same tokens when greedy, same distribution
    when sampling, and `stats` reports the acceptance rate."""
    cfg = cfg or GenerationConfig()
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise LmforgeError("no prompts given")
    start = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.bos_id
    prompt_ids = [list(p) if not isinstance(p, str)
                  else encode_prompt(tokenizer, p) or ([start] if start is not None else []) for p in prompts]
    texts = [StreamedText(tokenizer, cfg.stop, cfg.ignore_eos) for _ in prompts]
    ended = [False for _ in prompts]
    track_text = (stream is not None or bool(cfg.stop)) and cfg.num_beams == 1

    def on_tokens(nxt: torch.Tensor) -> bool:
        if not track_text:
            return False
        for b, tok in enumerate(nxt.tolist()):
            if not ended[b]:
                piece, reason = texts[b].add(tok)
                ended[b] = reason is not None
                if piece and stream is not None:
                    stream(b, piece)
        return all(ended)

    json_states = None
    if cfg.json_mode:
        table = json_table(tokenizer, model.config.vocab_size)
        json_states = [JsonState(table) for _ in prompts]
    ids, reasons, stats = generate_ids(model, prompt_ids, cfg, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id or 0,
                                       on_tokens=on_tokens, draft=draft, json_states=json_states)
    token_logprobs = stats.pop("token_logprobs", None)
    for b in range(len(prompts)):
        rest = texts[b].take()          # flush what was held back
        if rest and stream is not None:
            stream(b, rest)
    results = []
    for b in range(len(prompts)):
        text = tokenizer.decode(ids[b])
        reason = reasons[b]
        hit = find_stop(text, cfg.stop, 0)
        if hit is not None:
            text, reason = text[:hit], "stop"
        if stream is not None and cfg.num_beams > 1:
            stream(b, text)
        logprobs = None if token_logprobs is None else logprob_records(tokenizer, token_logprobs[b][: len(ids[b])],
                                                                      ids[b])
        results.append(Completion(text, ids[b], reason, len(prompt_ids[b]), stats, logprobs))
    return results


def logprob_records(tokenizer, rows: list[tuple[float, list[int], list[float]]], ids: list[int]) -> list[dict]:
    """JSON-ready log-probabilities: per token its text, id, logprob and the top alternatives."""
    def piece(i: int) -> str:
        return tokenizer.decode([i], skip_special_tokens=False)
    return [{"token": piece(tok), "id": tok, "logprob": lp,
             "top": [{"token": piece(t), "id": t, "logprob": tl} for t, tl in zip(top_ids, top_lps)]}
            for tok, (lp, top_ids, top_lps) in zip(ids, rows)]

