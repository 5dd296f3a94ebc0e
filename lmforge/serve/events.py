"""What the scheduler tells a request about each of its sequences, on the scheduler's thread:

    Token(seq, token_id, text, logprob)   a generated token and the text it completed ("" while
                                          a character or a possible stop string is incomplete);
                                          token_id None: the held-back text flushed at the end
    Finish(seq)                           the sequence ended: seq.finish_reason says why
                                          ("stop", "length", "cancelled")
    Failed(seq, message)                  decoding raised: the sequence ended with "error"

A sequence's events arrive in that order and end with exactly one Finish or Failed.
`replies.py` carries them to the request on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Token:
    seq: Any                     # the scheduler's `Sequence`
    token_id: int | None
    text: str
    logprob: tuple | None        # (token, logprob, [(alternative, logprob)]) when the request asked


@dataclass(frozen=True)
class Finish:
    seq: Any


@dataclass(frozen=True)
class Failed:
    seq: Any
    message: str


Event = Token | Finish | Failed
