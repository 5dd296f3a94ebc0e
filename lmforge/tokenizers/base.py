"""The tokenizer every lmforge verb uses: a Hugging Face `tokenizers.Tokenizer` plus roles.

All kinds (char, byte-level BPE, WordPiece, imported HF tokenizers) are stored the same
way, so `transformers` can read them too:

    tokenizer.json          the HF `tokenizers` file (vocabulary, merges, special tokens)
    tokenizer_config.json   which tokens are bos / eos / pad / unk, the kind, a chat template

lmforge's own tokenizers reserve fixed ids for the special tokens:
<pad>=0, <bos>=1, <eos>=2, <unk>=3, <mask>=4. <mask> is what masked-LM pretraining puts in
place of hidden tokens; encoders use <bos> as the [CLS] token and <eos> as [SEP]. A tokenizer
made before <mask> existed has no mask role (mask_id None). Text given to `encode` is always
treated as text: a literal "<eos>" in a corpus is spelled out, never turned into the special token.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders

from ..errors import ModelDirError
from ..fileio import read_json

SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "mask": "<mask>"}  # ids 0-4
TOKENIZER_FILE, TOKENIZER_CONFIG_FILE = "tokenizer.json", "tokenizer_config.json"


MAX_WORD_CHARS = 100          # longer runs of non-space (or space) characters are cut before BPE / WordPiece training
_LONG_RUN = re.compile(r"\S{%d,}|\s{%d,}" % (MAX_WORD_CHARS + 1, MAX_WORD_CHARS + 1))


def split_long_words(texts: Iterable[str], limit: int = MAX_WORD_CHARS) -> Iterator[str]:
    """The training texts with every run of more than `limit` non-space (or space) characters cut
    into pieces of `limit`, each its own text. The BPE and WordPiece trainers take time quadratic
    in a word's length (a 300 KB line without spaces: minutes); cut, they take linear time. Only
    training sees the pieces: encoding is unchanged, and no token can be longer than `limit`
    characters anyway (natural words are far shorter).

        >>> [len(t) for t in split_long_words(["ab " + "x" * 250 + " cd"])]
        [3, 100, 100, 50, 3]
    """
    pattern = _LONG_RUN if limit == MAX_WORD_CHARS else re.compile(r"\S{%d,}|\s{%d,}" % (limit + 1, limit + 1))
    for text in texts:
        pos = 0
        for m in pattern.finditer(text):
            if m.start() > pos:
                yield text[pos:m.start()]
            for i in range(m.start(), m.end(), limit):
                yield text[i:min(i + limit, m.end())]
            pos = m.end()
        if pos == 0:
            yield text
        elif pos < len(text):
            yield text[pos:]


def _role_property(role: str) -> property:
    """A read-only `Tokenizer` attribute: the id of the token that has `role`, or None."""
    def role_id(self: "Tokenizer") -> int | None:
        return self._role_id(role)
    return property(role_id, doc=f"id of the {role} token (None when this tokenizer has none)")


class Tokenizer:
    """Encode text to ids and back. `kind` is char, bpe, wordpiece or hf (imported).
    Roles: pad, bos (also [CLS]), eos (also [SEP]), unk, mask."""

    def __init__(self, hf: HFTokenizer, kind: str, special: dict[str, str | None] | None = None,
                 extra: dict | None = None):
        self.hf, self.kind = hf, kind
        self.hf.encode_special_tokens = True   # user text never produces special ids
        self.special = dict(SPECIAL_TOKENS if special is None else special)
        self.extra = dict(extra or {})         # other tokenizer_config.json fields (e.g. chat_template)

    # ---- ids of the special tokens ------------------------------------------------------
    def _role_id(self, role: str) -> int | None:
        tok = self.special.get(role)
        return None if tok is None else self.hf.token_to_id(tok)

    pad_id = _role_property("pad")
    bos_id = _role_property("bos")
    eos_id = _role_property("eos")
    unk_id = _role_property("unk")
    mask_id = _role_property("mask")

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def add_bos(self) -> bool:
        """Whether a decoder's prompts start with the bos token: an imported tokenizer that did so
        in `transformers` (Llama's) records `add_bos_token` in tokenizer_config.json."""
        return bool(self.extra.get("add_bos_token")) and self.bos_id is not None

    @property
    def special_ids(self) -> set[int]:
        return {i for i in (self._role_id(r) for r in self.special) if i is not None}

    # ---- encode / decode ----------------------------------------------------------------
    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self.hf.encode(text, add_special_tokens=False).ids
        return self._wrap(ids, bos, eos)

    def encode_batch(self, texts: list[str], bos: bool = False, eos: bool = False) -> list[list[int]]:
        return [self._wrap(e.ids, bos, eos) for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def _wrap(self, ids: list[int], bos: bool, eos: bool) -> list[int]:
        if bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
        if eos and self.eos_id is not None:
            ids = ids + [self.eos_id]
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def stream(self, ids: Iterable[int]) -> Iterator[str]:
        """Decode ids one at a time, yielding text as soon as it is complete (multi-byte
        characters split across tokens come out whole)."""
        ds = self.decode_stream()
        for i in ids:
            piece = ds.step(int(i))
            if piece:
                yield piece

    def decode_stream(self) -> "TextStream":
        return TextStream(self.hf)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.hf.id_to_token(i)

    # ---- files ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        from ..modeldir import atomic_write_text
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / TOKENIZER_FILE, self.hf.to_str(pretty=False))
        cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "lmforge_kind": self.kind,
               **{f"{role}_token": tok for role, tok in self.special.items() if tok is not None},
               **self.extra}
        atomic_write_text(d / TOKENIZER_CONFIG_FILE, json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> "Tokenizer":
        d = Path(directory)
        path = d / TOKENIZER_FILE if d.is_dir() else d
        if not path.is_file():
            raise ModelDirError(f"no tokenizer at {path}; the directory needs a tokenizer.json "
                                f"(train one with `lmforge prepare`, or copy it from the data directory)")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise ModelDirError(f"{path} is not a readable tokenizer.json ({e}); re-create it with "
                                f"`lmforge prepare` or restore it from the data directory") from e
        cfg_path = path.parent / TOKENIZER_CONFIG_FILE
        fix = "restore it from the data directory or re-create it with `lmforge prepare`"
        cfg = read_json(cfg_path, fix, ModelDirError) if cfg_path.is_file() else {}
        if not isinstance(cfg, dict):
            raise ModelDirError(f"{cfg_path} holds a JSON {type(cfg).__name__}, not an object; restore it from the "
                                f"data directory or re-create it with `lmforge prepare`")
        kind = cfg.pop("lmforge_kind", "hf")
        special: dict[str, str | None] = {}
        for role in SPECIAL_TOKENS:
            tok = cfg.pop(f"{role}_token", None)
            if isinstance(tok, dict):          # transformers writes AddedToken dicts sometimes
                tok = tok.get("content")
            if tok is None and hf.token_to_id(SPECIAL_TOKENS[role]) is not None:
                tok = SPECIAL_TOKENS[role]
            special[role] = tok
        keep = {k: v for k, v in cfg.items() if k in ("chat_template", "lmforge_chat_template", "add_bos_token")}
        return cls(hf, kind, special, keep)

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


class TextStream:
    """Incremental decoding: `step(id)` returns the text this token completes ("" while a
    multi-byte character is still incomplete). HF's DecodeStream raises on some invalid byte
    sequences (an untrained model emitting stray byte tokens); it then restarts at this token."""

    def __init__(self, hf: HFTokenizer):
        self.hf, self.ds = hf, decoders.DecodeStream(skip_special_tokens=True)

    def step(self, token_id: int) -> str:
        try:
            return self.ds.step(self.hf, token_id) or ""
        except Exception:  # tokenizers raises a bare Exception ("Invalid prefix encountered")
            self.ds = decoders.DecodeStream(skip_special_tokens=True)
            return self.ds.step(self.hf, token_id) or ""
