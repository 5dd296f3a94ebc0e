"""JSON mode: constrain decoding so the output is one syntactically valid JSON object.

A small pushdown automaton reads JSON character by character: a lexical state (expecting a key,
inside a string, inside a number, ...) plus the stack of open containers. A token is allowed when
every character of its text is a legal next character. Which tokens are allowed depends only on
the lexical state and the top few stack entries (a token can close at most `table.max_closers`
containers), so `JsonTokenTable` computes each such key's (V,) mask once per tokenizer, over the
whole vocabulary, and keeps it: a decoding step then costs one dict lookup and a masked_fill,
not a loop over the vocabulary in Python. After the closing brace only the end-of-text token is
allowed, so generation ends with the object.

Names for other decoding loops (the server's batched loop):

    table = json_table(tokenizer)          # built once per tokenizer and cached on it
    state = JsonState(table)               # one per sequence
    logits[b] = logits[b].masked_fill(~state.allowed_mask(), float("-inf"))
    state.advance(token_id)                # after sampling; state.complete once the object closed
    apply_json_masks(logits, states)       # the same for a batch (B, V), one state per row

    >>> s = JsonState.__new__(JsonState); s.lex, s.stack = ("start",), ()
    >>> for ch in '{"a": [1, true]}': s.lex, s.stack = step_char(s.lex, s.stack, ch)
    >>> s.lex
    ('done',)
"""

from __future__ import annotations

import torch

from ..errors import LmforgeError

WHITESPACE = " \t\n\r"
DIGITS = "0123456789"
HEX = "0123456789abcdefABCDEF"
ESCAPES = '"\\/bfnrtu'
LITERALS = {"t": "rue", "f": "alse", "n": "ull"}
NUMBER_END = {"int0", "int", "frac", "exp"}        # number states where the number may end
FAIL = None


def _after_value(stack: tuple) -> tuple:
    return ("done",) if not stack else ("after_value",)


def step_char(lex: tuple, stack: tuple, ch: str):
    """One character: (lexical state, stack of "{" / "[") -> the next pair, or (FAIL, FAIL)."""
    kind = lex[0]
    if kind == "str":                                          # ("str", is_key)
        if ch == '"':
            return (("colon",) if lex[1] else _after_value(stack)), stack
        if ch == "\\":
            return ("esc", lex[1]), stack
        return (lex, stack) if ch >= " " else (FAIL, FAIL)
    if kind == "esc":
        if ch == "u":
            return ("hex", lex[1], 4), stack
        return (("str", lex[1]), stack) if ch in ESCAPES else (FAIL, FAIL)
    if kind == "hex":
        if ch not in HEX:
            return FAIL, FAIL
        return (("str", lex[1]) if lex[2] == 1 else ("hex", lex[1], lex[2] - 1)), stack
    if kind == "lit":                                          # ("lit", letters still to come)
        if ch != lex[1][0]:
            return FAIL, FAIL
        return (("lit", lex[1][1:]) if len(lex[1]) > 1 else _after_value(stack)), stack
    if kind in ("minus", "int0", "int", "dot", "frac", "e", "esign", "exp"):
        nxt = _number_char(kind, ch)
        if nxt is not None:
            return (nxt,), stack
        if kind in NUMBER_END:                                 # the number ended: read ch after the value
            return step_char(_after_value(stack), stack, ch)
        return FAIL, FAIL
    if ch in WHITESPACE:
        return (lex, stack) if kind != "done" else (FAIL, FAIL)
    if kind == "start":
        return (("obj_first",), stack + ("{",)) if ch == "{" else (FAIL, FAIL)
    if kind in ("obj_first", "obj_key"):
        if ch == '"':
            return ("str", True), stack
        if ch == "}" and kind == "obj_first":
            return _after_value(stack[:-1]), stack[:-1]
        return FAIL, FAIL
    if kind == "colon":
        return (("value",), stack) if ch == ":" else (FAIL, FAIL)
    if kind in ("value", "arr_first"):
        if ch == "]" and kind == "arr_first":
            return _after_value(stack[:-1]), stack[:-1]
        return _start_value(stack, ch)
    if kind == "after_value":
        top = stack[-1]
        if ch == ",":
            return (("obj_key",) if top == "{" else ("value",)), stack
        if (ch == "}" and top == "{") or (ch == "]" and top == "["):
            return _after_value(stack[:-1]), stack[:-1]
        return FAIL, FAIL
    return FAIL, FAIL                                          # "done": nothing may follow


def _start_value(stack: tuple, ch: str):
    if ch == "{":
        return ("obj_first",), stack + ("{",)
    if ch == "[":
        return ("arr_first",), stack + ("[",)
    if ch == '"':
        return ("str", False), stack
    if ch == "-":
        return ("minus",), stack
    if ch == "0":
        return ("int0",), stack
    if ch in DIGITS:
        return ("int",), stack
    if ch in LITERALS:
        return ("lit", LITERALS[ch]), stack
    return FAIL, FAIL


def _number_char(kind: str, ch: str) -> str | None:
    """The number state after `ch`, or None when `ch` cannot continue the number."""
    if kind == "minus":
        return "int0" if ch == "0" else "int" if ch in DIGITS else None
    if kind == "int0":
        return "dot" if ch == "." else "e" if ch in "eE" else None
    if kind == "int":
        return "int" if ch in DIGITS else "dot" if ch == "." else "e" if ch in "eE" else None
    if kind in ("dot", "frac"):
        return "frac" if ch in DIGITS else ("e" if ch in "eE" and kind == "frac" else None)
    if kind == "e":
        return "esign" if ch in "+-" else "exp" if ch in DIGITS else None
    return "exp" if ch in DIGITS else None                     # esign, exp


def step_text(lex: tuple, stack: tuple, text: str):
    for ch in text:
        lex, stack = step_char(lex, stack, ch)
        if lex is FAIL:
            return FAIL, FAIL
    return lex, stack


class JsonTokenTable:
    """Per-tokenizer data: each token's text, and the allowed-token mask of every (lexical state,
    top of stack) key met so far (computed once over the vocabulary, then looked up)."""

    def __init__(self, tokenizer, vocab_size: int | None = None):
        self.vocab_size = vocab_size or tokenizer.vocab_size
        self.eos_id = tokenizer.eos_id
        if self.eos_id is None:
            raise LmforgeError("--json-mode needs a tokenizer with an end-of-text token (eos_token) to end the "
                               "output after the object; set one in tokenizer_config.json")
        specials = tokenizer.special_ids
        self.texts: list[str | None] = []
        for i in range(self.vocab_size):
            text = tokenizer.decode([i], skip_special_tokens=False) if i < tokenizer.vocab_size else ""
            # special tokens and empty ones never; a piece of a multi-byte character only inside a string
            self.texts.append(None if (i in specials or not text) else text)
        if not any(t is not None and t.lstrip(WHITESPACE).startswith("{") for t in self.texts):
            raise LmforgeError("--json-mode: this tokenizer has no token that starts with '{', so it cannot spell a "
                               "JSON object; train the tokenizer on text containing JSON, or drop --json-mode")
        self.max_closers = max((t.count("}") + t.count("]") for t in self.texts if t), default=0)
        # inside a string most tokens are plain text: accepted without reading them, and the state stays
        self.string_safe = torch.tensor([t is not None and ('"' not in t and "\\" not in t and min(t) >= " ")
                                         for t in self.texts], dtype=torch.bool)
        self.string_unsafe = [i for i, t in enumerate(self.texts) if t is not None and not self.string_safe[i]]
        # elsewhere most tokens fail at their first character: try each first character once
        self.by_first: dict[str, list[int]] = {}
        for i, t in enumerate(self.texts):
            if t is not None and "\ufffd" not in t:
                self.by_first.setdefault(t[0], []).append(i)
        self.masks: dict[tuple, torch.Tensor] = {}
        self.device = torch.device("cpu")

    def key(self, lex: tuple, stack: tuple) -> tuple:
        return lex, stack[-(self.max_closers + 1):]

    def mask(self, lex: tuple, stack: tuple) -> torch.Tensor:
        """(V,) bool: the tokens that keep the output a valid JSON prefix from this state."""
        key = self.key(lex, stack)
        m = self.masks.get(key)
        if m is None:
            m = torch.zeros(self.vocab_size, dtype=torch.bool)
            if lex == ("done",):
                allowed = [self.eos_id]
            elif lex[0] == "str":
                m |= self.string_safe
                allowed = [i for i in self.string_unsafe if self._accepts(lex, key[1], self.texts[i])]
            else:
                # a token closes fewer containers than the key holds, so the stack below never matters
                allowed = [i for first, ids in self.by_first.items() if step_char(lex, key[1], first)[0] is not FAIL
                           for i in ids if self._accepts(lex, key[1], self.texts[i])]
            m[allowed] = True
            self.masks[key] = m = m.to(self.device)
        return m

    @staticmethod
    def _accepts(lex: tuple, stack: tuple, text: str) -> bool:
        if "\ufffd" in text:                                   # part of a multi-byte character
            return lex[0] == "str"
        return step_text(lex, stack, text)[0] is not FAIL


def json_table(tokenizer, vocab_size: int | None = None) -> JsonTokenTable:
    """The tokenizer's table, built on first use and kept on the tokenizer object."""
    table = getattr(tokenizer, "_json_table", None)
    if table is None or table.vocab_size != (vocab_size or tokenizer.vocab_size):
        table = JsonTokenTable(tokenizer, vocab_size)
        tokenizer._json_table = table
    return table


class JsonState:
    """One sequence's progress through a JSON object."""

    def __init__(self, table: JsonTokenTable):
        self.table = table
        self.lex: tuple = ("start",)
        self.stack: tuple = ()

    @property
    def complete(self) -> bool:
        return self.lex == ("done",)

    def allowed_mask(self) -> torch.Tensor:
        return self.table.mask(self.lex, self.stack)

    def advance(self, token_id: int) -> None:
        if token_id == self.table.eos_id and self.complete:
            return
        text = self.table.texts[token_id] if token_id < len(self.table.texts) else None
        if text is None or not self.table._accepts(self.lex, self.stack, text):
            raise LmforgeError(f"token {token_id} ({text!r}) does not continue valid JSON")
        if "\ufffd" not in text:
            self.lex, self.stack = step_text(self.lex, self.stack, text)


def apply_json_masks(logits: torch.Tensor, states: list[JsonState | None]) -> torch.Tensor:
    """logits (B, V) with the tokens each row's state forbids set to -inf (None rows: unconstrained)."""
    rows = [s.allowed_mask() if s is not None else None for s in states]
    if all(r is None for r in rows):
        return logits
    V = logits.shape[-1]
    full = torch.ones(V, dtype=torch.bool)
    mask = torch.stack([(r if r is not None else full)[:V].to(logits.device) for r in rows])
    return logits.masked_fill(~mask, float("-inf"))
