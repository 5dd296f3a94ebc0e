"""The text of a sequence as its tokens arrive, shared by `generate` (streaming, stop strings)
and the server's per-sequence picker: decoded incrementally, cut at the first stop string, and
released as it becomes final — held back while it could still turn into a stop string.

    >>> find_stop("say hello", ["lo", "y"], 0)
    2
"""

from __future__ import annotations


def find_stop(text: str, stops: list[str], new_from: int) -> int | None:
    """Index where the earliest stop string starts in `text`, looking only where text added from
    `new_from` on could complete one (None: no stop string)."""
    best = None
    for s in stops:
        if not s:
            continue
        i = text.find(s, max(0, new_from - len(s) + 1))
        if i >= 0 and (best is None or i < best):
            best = i
    return best


class StreamedText:
    """One sequence's text. `add(token)` returns the text that may be shown now and whether the
    sequence ended ("stop": the end-of-text token or a stop string); `cut` says a stop string
    ended it (`text` then stops before it); `take` releases the rest at the end."""

    def __init__(self, tokenizer, stops: list[str], ignore_eos: bool = False):
        self.tokenizer, self.stops, self.ignore_eos = tokenizer, stops, ignore_eos
        self.text = ""              # decoded so far (cut at a stop string)
        self.emitted = 0            # characters released
        self.cut = False            # ended by a stop string
        self.hold = max((len(s) for s in stops), default=1) - 1     # what may still become a stop string
        self._decoder = None

    def add(self, tok: int) -> tuple[str, str | None]:
        if tok == self.tokenizer.eos_id and not self.ignore_eos:
            return self.take(len(self.text)), "stop"
        if tok in self.tokenizer.special_ids:
            return "", None
        if self._decoder is None:
            self._decoder = self.tokenizer.decode_stream()
        piece = self._decoder.step(tok)
        if not piece:
            return "", None
        before = len(self.text)
        self.text += piece
        hit = find_stop(self.text, self.stops, before)
        if hit is not None:
            self.text, self.cut = self.text[:hit], True
            return self.take(len(self.text)), "stop"
        return self.take(len(self.text) - self.hold), None

    def take(self, upto: int | None = None) -> str:
        """The text from what was last released up to `upto` (default: all of it)."""
        upto = len(self.text) if upto is None else upto
        if upto <= self.emitted:
            return ""
        piece, self.emitted = self.text[self.emitted: upto], upto
        return piece
