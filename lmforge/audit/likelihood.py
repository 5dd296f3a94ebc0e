"""How likely a model finds given token ids: what every model audit measures.

Decoders: log p(ids[i] | ids[:i]) of every token of a batch of sequences, in one teacher-forced
forward pass per batch (sequences of unequal length padded on the right: a causal model never
looks right, so the padding changes nothing before it), with whether each token was the argmax.
Encoders (masked LM): the pseudo-log-likelihood of chosen positions, each masked in turn
(Salazar et al. 2020; the CrowS-Pairs score of Nangia et al. 2020 masks the tokens a pair shares).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError


def check_family(module, families: tuple[str, ...], audit: str) -> None:
    family = module.config.family
    if family not in families:
        raise ConfigError(f"the {audit} audit needs a {' or '.join(families)} model, but this one is a {family}")


def _batches(seqs: Sequence, batch_size: int, desc: str | None) -> Iterable[tuple[int, Sequence]]:
    starts = range(0, len(seqs), batch_size)
    for i in tqdm(starts, desc=desc, disable=desc is None, leave=False):
        yield i, seqs[i: i + batch_size]


@torch.inference_mode()
def token_logprobs(module, seqs: Sequence[Sequence[int]], batch_size: int = 64, desc: str | None = None
                   ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each sequence of ids (at most the context length): (log p of each token after the first
    (float32, len - 1), whether each of them was the model's most likely token). `desc` names a
    progress bar (None: no bar)."""
    check_family(module, ("decoder",), "likelihood")
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for _, chunk in _batches(seqs, batch_size, desc):
        lengths = [len(s) for s in chunk]
        x = torch.zeros(len(chunk), max(lengths), dtype=torch.long)
        for r, s in enumerate(chunk):
            x[r, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        logp = torch.log_softmax(module(x[:, :-1].to(device)).float(), dim=-1).cpu()     # (B, T-1, V)
        target = x[:, 1:]
        chosen = logp.gather(-1, target[..., None]).squeeze(-1)                         # (B, T-1)
        greedy = logp.argmax(-1) == target
        out += [(chosen[r, : n - 1], greedy[r, : n - 1]) for r, n in enumerate(lengths)]
    module.train(was_training)
    return out


@torch.inference_mode()
def pseudo_log_likelihood(module, ids: Sequence[int], positions: Sequence[int], mask_id: int,
                          batch_size: int = 64) -> float:
    """Sum over `positions` p of log P(ids[p] | ids with position p replaced by <mask>): one copy of
    the sequence per position, each with one mask, scored by the masked-LM head."""
    check_family(module, ("encoder",), "pseudo-log-likelihood")
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    ids_t = torch.as_tensor(list(ids), dtype=torch.long)
    total = 0.0
    for _, chunk in _batches(list(positions), batch_size, None):
        rows = torch.arange(len(chunk))
        where = torch.as_tensor(chunk, dtype=torch.long)
        x = ids_t.repeat(len(chunk), 1)
        x[rows, where] = mask_id
        logits = module(x.to(device), head="mlm").float().cpu()                        # (N, T, V)
        logp = torch.log_softmax(logits[rows, where], dim=-1)                           # (N, V)
        total += float(logp[rows, ids_t[where]].double().sum())
    module.train(was_training)
    return total
