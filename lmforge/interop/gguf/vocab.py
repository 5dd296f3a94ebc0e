"""The tokenizer inside a GGUF file (`tokenizer.*` metadata) <-> lmforge's `Tokenizer`.

A GGUF carries no tokenizer.json: llama.cpp rebuilds the tokenizer from the token list, the
token types, the merges (or scores) and the special ids. Two kinds are written and read:

    "gpt2"   byte-level BPE (lmforge's bpe, GPT-2's): tokens in the byte-to-unicode alphabet,
             merges "a b" in rank order, the pre-tokenizer regex named by tokenizer.ggml.pre
    "llama"  sentencepiece-style: spaces become "▁", a piece not in the vocabulary falls back to
             its <0xXX> byte tokens. lmforge's char tokenizer (BPE with no merges and byte
             fallback) is exactly this with no merges, so it is written as "llama" with " "
             spelled "▁" and no space prefix.

Token types are llama.cpp's: 1 normal, 2 unknown, 3 control (never produced from text, as
lmforge's specials), 5 unused (rows padding the vocabulary), 6 byte.
"""

from __future__ import annotations

import json
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from ...errors import ConfigError
from ...tokenizers import Tokenizer

NORMAL, UNKNOWN, CONTROL, UNUSED, BYTE = 1, 2, 3, 5, 6
SPACE = "\u2581"                       # sentencepiece's "▁"
ROLE_KEYS = {"bos": "tokenizer.ggml.bos_token_id", "eos": "tokenizer.ggml.eos_token_id",
             "pad": "tokenizer.ggml.padding_token_id", "unk": "tokenizer.ggml.unknown_token_id"}
KIND_KEY, TEMPLATE_KEY = "lmforge.tokenizer_kind", "lmforge.chat_template"   # lmforge's own, for a round trip

# tokenizer.ggml.pre -> the split regex before byte-level BPE (None: GPT-2's, built into ByteLevel)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_SPLITS = {"gpt-2": None, "default": None, "llama-bpe": LLAMA3_SPLIT}


# --------------------------------------------------------------------------------- writing
def tokenizer_metadata(tokenizer: Tokenizer, n_vocab: int) -> dict[str, Any]:
    """The tokenizer.* keys for `tokenizer`, its token list padded to the model's `n_vocab` rows."""
    spec = json.loads(tokenizer.hf.to_str())
    model, pre = spec["model"], spec.get("pre_tokenizer") or {}
    if model.get("type") != "BPE":
        raise ConfigError(f"the {tokenizer.kind} tokenizer has no GGUF form; llama.cpp reads byte-level BPE "
                          f"(lmforge's bpe) and sentencepiece-style vocabularies (lmforge's char)")
    space_prefix = sentencepiece_prefix(spec)
    if (pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not model.get("byte_fallback")
            and not spec.get("normalizer")):
        kind, fmt = "gpt2", lambda tok: tok
    elif not pre and not spec.get("normalizer") and model.get("byte_fallback") and not model.get("merges"):
        if any(SPACE in tok for tok in model["vocab"]):
            raise ConfigError(f"the char tokenizer's vocabulary holds {SPACE!r}, which GGUF's sentencepiece form "
                              f"uses for the space; retrain it without that character")
        kind, fmt, space_prefix = "llama", lambda tok: tok.replace(" ", SPACE), False
    elif space_prefix is not None and model.get("byte_fallback"):     # an imported Llama / TinyLlama tokenizer
        kind, fmt = "llama", lambda tok: tok
    else:
        raise ConfigError(f"the {tokenizer.kind} tokenizer ({pre.get('type', 'no')} pre-tokenizer) has no GGUF form "
                          f"lmforge writes; GGUF holds byte-level BPE (lmforge's bpe) or a char vocabulary")
    size = tokenizer.vocab_size
    if size > n_vocab:
        raise ConfigError(f"the tokenizer has {size} tokens but the model only {n_vocab} embedding rows; "
                          f"the tokenizer does not belong to this model")
    special = {tokenizer.id_to_token(i) for i in tokenizer.special_ids}
    special |= {t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
    tokens, types = [], []
    for i in range(n_vocab):
        tok = tokenizer.id_to_token(i) if i < size else None
        if tok is None:
            tokens.append(f"[PAD{i}]")                      # a row no token reaches, as llama.cpp's converter pads
            types.append(UNUSED)
            continue
        tokens.append(tok if tok in special else fmt(tok))
        types.append(CONTROL if tok in special else
                     BYTE if kind == "llama" and len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">")
                     else NORMAL)
    meta: dict[str, Any] = {"tokenizer.ggml.model": kind, "tokenizer.ggml.tokens": tokens,
                            "tokenizer.ggml.token_type": types, KIND_KEY: tokenizer.kind,
                            "tokenizer.ggml.add_bos_token": tokenizer.add_bos, "tokenizer.ggml.add_eos_token": False}
    if kind == "gpt2":
        meta["tokenizer.ggml.pre"] = "gpt-2"
        meta["tokenizer.ggml.merges"] = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    else:
        meta["tokenizer.ggml.scores"] = merge_scores(tokens, types, model.get("merges") or [])
        meta["tokenizer.ggml.add_space_prefix"] = space_prefix
    for role, key in ROLE_KEYS.items():
        token_id = getattr(tokenizer, f"{role}_id")
        if token_id is not None:
            meta[key] = token_id
    meta.update(chat_template_metadata(tokenizer))
    return meta


def sentencepiece_prefix(spec: dict[str, Any]) -> bool | None:
    """For a sentencepiece-style tokenizer.json (spaces become "▁", by a Metaspace pre-tokenizer
    or a Replace normalizer): whether it adds "▁" before the text; None for other tokenizers."""
    pre, norm = spec.get("pre_tokenizer") or {}, spec.get("normalizer") or {}
    if pre.get("type") == "Metaspace" and pre.get("replacement") == SPACE and not pre.get("split") and not norm:
        return pre.get("prepend_scheme", "always") != "never"
    steps = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
    kinds = [(n.get("type"), n.get("prepend"), n.get("content"), (n.get("pattern") or {}).get("String")) for n in steps]
    if not pre and ("Replace", None, SPACE, " ") in kinds and all(
            k == ("Replace", None, SPACE, " ") or k == ("Prepend", SPACE, None, None) for k in kinds):
        return ("Prepend", SPACE, None, None) in kinds
    return None


def merge_scores(tokens: list[str], types: list[int], merges: list) -> list[float]:
    """Sentencepiece scores that make llama.cpp merge in BPE's order: a token made by merge number
    r scores -r; single symbols, bytes and specials 0; a piece no merge makes scores below all."""
    made: dict[str, int] = {}
    for rank, merge in enumerate(merges):
        a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
        made.setdefault(a + b, rank)
    floor = -float(len(merges) + 1)
    return [-float(made[t]) if t in made else 0.0 if len(t) == 1 or kind != NORMAL else floor
            for t, kind in zip(tokens, types)]


def chat_template_metadata(tokenizer: Tokenizer) -> dict[str, str]:
    """tokenizer.chat_template (Jinja, as llama.cpp and Ollama read it): an imported model's own,
    else lmforge's template (the stored one, or the default `lmforge chat` uses) written in Jinja;
    lmforge's template fields also go under lmforge.chat_template for a faithful import."""
    from ...data.chat import TEMPLATE_KEY as STORED, ChatTemplate, chat_template
    stored = tokenizer.extra.get(STORED)
    if not stored and isinstance(tokenizer.extra.get("chat_template"), str):
        return {"tokenizer.chat_template": tokenizer.extra["chat_template"]}
    if tokenizer.eos_id is None:
        return {}
    meta = {"tokenizer.chat_template": (chat_template(tokenizer) or ChatTemplate()).jinja()}
    if stored:
        meta[TEMPLATE_KEY] = json.dumps(stored, ensure_ascii=False)
    return meta


# --------------------------------------------------------------------------------- reading
def tokenizer_from_metadata(meta: dict[str, Any], source: str) -> Tokenizer:
    """lmforge's tokenizer for a file's tokenizer.* keys (gpt2 or llama kinds)."""
    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not tokens:
        raise ConfigError(f"{source} holds no tokenizer (tokenizer.ggml.tokens); lmforge needs the vocabulary")
    types = list(meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens))
    vocab = {tok: i for i, tok in reversed(list(enumerate(tokens)))}     # a repeated token keeps its first id
    if kind == "gpt2":
        hf = byte_level_bpe(vocab, meta, source)
    elif kind == "llama":
        hf = sentencepiece_bpe(vocab, tokens, types, meta)
    else:
        raise ConfigError(f"{source}: tokenizer.ggml.model={kind!r} cannot be imported; lmforge reads gpt2 "
                          f"(byte-level BPE) and llama (sentencepiece) tokenizers")
    hf.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok, t in zip(tokens, types)
                           if t == CONTROL])
    special = {role: tokens[meta[key]] if isinstance(meta.get(key), int) and meta[key] < len(tokens) else None
               for role, key in ROLE_KEYS.items()}
    special["mask"] = "<mask>" if "<mask>" in vocab and types[vocab["<mask>"]] == CONTROL else None
    extra: dict[str, Any] = {}
    if meta.get("tokenizer.ggml.add_bos_token", kind == "llama"):   # llama.cpp's default for each kind
        extra["add_bos_token"] = True
    if TEMPLATE_KEY in meta:
        from ...data.chat import TEMPLATE_KEY as STORED
        extra[STORED] = json.loads(meta[TEMPLATE_KEY])
    elif isinstance(meta.get("tokenizer.chat_template"), str):
        extra["chat_template"] = meta["tokenizer.chat_template"]
    return Tokenizer(hf, meta.get(KIND_KEY, "hf"), special, extra)


def byte_level_bpe(vocab: dict[str, int], meta: dict[str, Any], source: str) -> HFTokenizer:
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_SPLITS:
        raise ConfigError(f"{source}: tokenizer.ggml.pre={pre!r} cannot be imported; lmforge knows the "
                          f"pre-tokenizers {', '.join(PRE_SPLITS)}")
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
    split = PRE_SPLITS[pre]
    hf.pre_tokenizer = (pre_tokenizers.ByteLevel(add_prefix_space=False) if split is None else
                        pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]))
    hf.decoder = decoders.ByteLevel()
    return hf


def sentencepiece_bpe(vocab: dict[str, int], tokens: list[str], types: list[int],
                      meta: dict[str, Any]) -> HFTokenizer:
    """A sentencepiece vocabulary as a byte-fallback BPE: the merges are every split of a piece
    into two pieces of the vocabulary, the piece with the higher score merging first."""
    scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    merges = []
    for i in sorted(range(len(tokens)), key=lambda i: -scores[i]):
        piece = tokens[i]
        if types[i] != NORMAL or len(piece) < 2:
            continue
        merges += [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
    unk = meta.get(ROLE_KEYS["unk"])
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True,
                                unk_token=tokens[unk] if isinstance(unk, int) else None))
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    hf.normalizer = normalizers.Sequence([*([normalizers.Prepend(SPACE)] if prefix else []),
                                          normalizers.Replace(" ", SPACE)])
    hf.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(),
                                    *([decoders.Strip(" ", 1, 0)] if prefix else [])])
    return hf
