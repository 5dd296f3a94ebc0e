"""Speculative decoding (Leviathan et al., 2023; Chen et al., 2023): a small draft model
proposes k tokens one at a time; the model scores all of them in one forward pass, keeps the
longest prefix it agrees with, and adds one token of its own.

Exactness. Greedy: a drafted token is kept iff it is the model's argmax there, and the added
token is the model's argmax — exactly the tokens of plain greedy decoding. Sampling: a token d
drawn from the draft's distribution q is kept with probability min(1, p(d) / q(d)); at the first
rejection the token is drawn from max(0, p - q) renormalised; if all k are kept, one more is
drawn from p. Every emitted token is then distributed exactly as under p, the model's own
(temperature, top-k, top-p filtered) distribution.

Both models decode over their KV caches. At the start of a round both caches hold every token
before `last` (the newest token, at slot n) — the draft's may lag (when all k drafts were kept
it never saw its own k-th token), so the round first feeds it what it missed. Cache slots past
the kept tokens hold stale keys: the causal mask hides them (a query at slot i sees slots <= i)
and the next round overwrites them.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import LmforgeError
from .core import GenerationConfig, RunClock, decoding_run, finish, prefill, prepare_prompts
from .sampling import probabilities


def check_draft(tokenizer, draft_tokenizer, draft_name: str = "the draft model") -> None:
    """A draft must share the model's tokenizer: its token ids are the model's token ids."""
    if tokenizer.hf.to_str() != draft_tokenizer.hf.to_str():
        raise LmforgeError(f"{draft_name} has a different tokenizer than the model; a draft must use the same one "
                           f"(train it on data prepared with `--tokenizer MODEL_DIR`, or distil it with "
                           f"`lmforge distill --teacher MODEL_DIR`)")


def accept_drafts(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, greedy: bool,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Verify drafted tokens; batched over a leading dimension N.

    p: (N, k+1, V) the model's probabilities (greedy: any scores) at the k drafted positions and
    one beyond; q: (N, k, V) the draft's probabilities the drafts were drawn from; drafts: (N, k).
    Returns (kept (N,) number of leading drafts kept, next_token (N,) the model's token after them).
    """
    N, k = drafts.shape
    if greedy:
        best = p.argmax(dim=-1)                                           # (N, k+1)
        kept = (best[:, :k] == drafts).long().cumprod(dim=-1).sum(dim=-1)
        return kept, best.gather(1, kept[:, None]).squeeze(1)
    p_drafted = p[:, :k].gather(-1, drafts[..., None]).squeeze(-1)        # (N, k) p(d_i)
    q_drafted = q.gather(-1, drafts[..., None]).squeeze(-1)               # (N, k) q(d_i) > 0: d_i ~ q
    u = torch.rand(N, k, generator=generator, device=p.device)
    kept = (u * q_drafted < p_drafted).long().cumprod(dim=-1).sum(dim=-1)  # each kept w.p. min(1, p/q)
    at = kept[:, None, None].expand(N, 1, p.shape[-1])
    p_next = p.gather(1, at).squeeze(1)                                   # (N, V) at the first rejection
    q_next = F.pad(q, (0, 0, 0, 1)).gather(1, at).squeeze(1)              # zeros when all k were kept
    residual = (p_next - q_next).clamp(min=0)
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p_next)   # p == q: rejection impossible
    return kept, torch.multinomial(residual, 1, generator=generator).squeeze(-1)


def check_speculative(model, draft, prompt_ids: list[list[int]], cfg: GenerationConfig) -> None:
    """Refuse what speculative decoding cannot do, naming the option to drop."""
    if len(prompt_ids) != 1:
        raise LmforgeError(f"speculative decoding takes one prompt at a time, got {len(prompt_ids)}; "
                           f"give one prompt, or drop --draft to decode them as a batch")
    if cfg.repetition_penalty != 1.0:
        raise LmforgeError("--repetition-penalty is not supported with a draft model; drop one of the two")
    if cfg.min_new_tokens:
        raise LmforgeError("--min-new-tokens is not supported with a draft model; drop one of the two")
    if cfg.logprobs is not None or cfg.json_mode:
        raise LmforgeError("--logprobs and --json-mode are not supported with a draft model; drop --draft")
    if draft.config.vocab_size != model.config.vocab_size:
        raise LmforgeError(f"the draft model's vocabulary ({draft.config.vocab_size}) differs from the model's "
                           f"({model.config.vocab_size}); a draft must use the same tokenizer")


@torch.no_grad()
def speculative_generate_ids(model, draft, prompt_ids: list[list[int]], cfg: GenerationConfig, *,
                             eos_id: int | None = None, pad_id: int = 0,
                             on_tokens: Callable[[torch.Tensor], bool | None] | None = None,
                             device: torch.device | str | None = None) -> tuple[list[list[int]], list[str], dict]:
    """`generate_ids` with a draft model (one prompt). Same return value; stats add the acceptance
    rate (kept / drafted tokens) and tokens per model step."""
    check_speculative(model, draft, prompt_ids, cfg)
    device = device or next(model.parameters()).device
    context = min(model.config.context_length, draft.config.context_length)
    idx, _, _, max_new = prepare_prompts(prompt_ids, context, cfg.max_new_tokens, cfg.truncate_prompt, pad_id,
                                         within="speculative decoding")
    run = Speculation(model, draft, cfg, idx, max_new, eos_id=eos_id, pad_id=pad_id, on_tokens=on_tokens,
                      device=device)
    with decoding_run(model, draft, batch_size=1, cache_len=run.T0 + max_new):
        clock = RunClock()
        first = run.prefill()
        clock.prefilled()
        done = run.emit(first)
        while not done:
            done = run.round()
    ids, reason = finish(run.out, cfg, eos_id)
    return [ids], [reason], run.stats(clock)


class Speculation:
    """One speculative decoding run: the text (`tokens`, prompt + generated), how far the draft's
    cache is valid (`draft_len`), the counts for the stats. A `round` drafts (`propose`), verifies
    and emits the kept tokens and the model's own."""

    def __init__(self, model, draft, cfg: GenerationConfig, idx: torch.Tensor, max_new: int, *,
                 eos_id: int | None, pad_id: int, on_tokens: Callable[[torch.Tensor], bool | None] | None,
                 device: torch.device | str):
        self.model, self.draft, self.cfg, self.max_new, self.device = model, draft, cfg, max_new, device
        self.eos_id, self.on_tokens = eos_id, on_tokens
        self.T0 = T0 = idx.shape[1]
        self.tokens = torch.full((1, T0 + max_new), pad_id, dtype=torch.long, device=device)   # prompt + generated
        self.tokens[:, :T0] = idx
        self.greedy = cfg.temperature <= 0
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed) if cfg.seed is not None else None
        self.out: list[int] = []
        self.draft_len = T0                                               # draft cache holds slots [0, draft_len)
        self.drafted = self.kept_total = self.steps = 0

    def dist(self, logits: torch.Tensor) -> torch.Tensor:                 # greedy compares raw scores
        cfg = self.cfg
        return logits if self.greedy else probabilities(logits, cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p)

    def draw(self, scores: torch.Tensor) -> torch.Tensor:                 # (1, V) -> (1,)
        return scores.argmax(-1) if self.greedy else torch.multinomial(scores, 1, generator=self.generator).squeeze(-1)

    def prefill(self) -> int:
        """Both caches take the prompt; the model's first token."""
        prompt = self.tokens[:, :self.T0]
        first = self.draw(self.dist(prefill(self.model, prompt, None, None)))
        prefill(self.draft, prompt, None, None)
        return int(first)

    def emit(self, token: int) -> bool:
        """Append a token; True when generation is over."""
        self.tokens[0, self.T0 + len(self.out)] = token
        self.out.append(token)
        stop = self.on_tokens(torch.tensor([token], device=self.device)) if self.on_tokens is not None else None
        ends = self.eos_id is not None and not self.cfg.ignore_eos and token == self.eos_id
        return bool(stop) or len(self.out) == self.max_new or ends

    def propose(self, n: int, k: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """k drafted tokens after `last` (at slot n), each (1,), and the draft's distributions
        they were drawn from, each (1, V)."""
        drafts, q_rows = [], []
        if k > 0:
            logits = self.draft(self.tokens[:, self.draft_len: n + 1],    # what the draft missed, then `last`
                                input_pos=torch.arange(self.draft_len, n + 1, device=self.device),
                                last_only=True)[:, -1]
            for i in range(k):
                q_rows.append(self.dist(logits))                          # (1, V)
                drafts.append(self.draw(q_rows[-1]))                      # (1,)
                if i < k - 1:
                    logits = self.draft(drafts[-1][:, None],
                                        input_pos=torch.tensor([n + 1 + i], device=self.device))[:, -1]
            self.draft_len = n + k                                        # it has seen `last` and drafts 1..k-1
        return drafts, q_rows

    def round(self) -> bool:
        """Draft, verify in one model pass, emit the kept drafts and the model's token; True when over."""
        n = self.T0 + len(self.out) - 1                                   # slot of `last`, in neither cache yet
        k = min(self.cfg.draft_tokens, self.max_new - len(self.out) - 1)  # room for k drafts + 1 model token
        drafts, q_rows = self.propose(n, k)
        verify = torch.cat([self.tokens[:, n: n + 1], *(d[:, None] for d in drafts)], dim=1)          # (1, k+1)
        p = self.dist(self.model(verify, input_pos=torch.arange(n, n + k + 1, device=self.device)))  # (1, k+1, V)
        q = torch.stack(q_rows, dim=1) if drafts else p[:, :0]                                        # (1, k, V)
        d = torch.stack(drafts, dim=1) if drafts else verify[:, :0]                                   # (1, k)
        kept, nxt = accept_drafts(p, q, d, self.greedy, self.generator)
        kept = int(kept)
        self.drafted, self.kept_total, self.steps = self.drafted + k, self.kept_total + kept, self.steps + 1
        done = False
        for token in d[0, :kept].tolist() + [int(nxt)]:
            if done := self.emit(token):
                break
        self.draft_len = min(self.draft_len, n + 1 + kept)                # the draft's cache is valid up to here
        return done

    def stats(self, clock: RunClock) -> dict:
        n_out = len(self.out)
        return clock.stats(self.T0, n_out, 1, draft_tokens=self.cfg.draft_tokens, drafted=self.drafted,
                           accepted=self.kept_total, acceptance_rate=self.kept_total / max(self.drafted, 1),
                           model_steps=self.steps, tokens_per_step=(n_out - 1) / max(self.steps, 1))
