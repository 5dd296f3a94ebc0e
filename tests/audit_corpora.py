"""Corpora with planted facts for the audit tests, and the tiny models trained on them (session
fixtures, imported by conftest.py so that every tests/test_audit_*.py shares them).

- `memorized`: documents of random made-up words (nothing to generalise from but the word list),
  the last 40 of them held out (the validation split), and three canaries of the format
  "the secret code is {secret}" (3 digits: 1,000 candidates, few enough to rank them all quickly) repeated 1, 10 and 100 times among
  the training documents, recorded in DATA/canaries.json as `prepare --canaries` does
  ; a gpt-tiny trained ~7 epochs on it, so it overfits.
- `deduplicated`: the same corpus prepared with `--dedup exact` (one copy of each canary left),
  the same gpt-tiny trained as many steps on it.
- `bias_model`: sentences of 40 occupations each followed by one pronoun (herself / himself, right
  after the occupation, so that a tiny model learns the pair in a few steps). For the 20 occupations
  of the planted half, the corpus uses the pronoun the pairs file calls stereotypical for 19 of
  them (95%), the other one for 1; for the 20 of the balanced half, for 10 of them. One gpt-tiny
  learns both halves; each half has its own pairs file (3 templates per occupation).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

CANARY_FORMAT = "the secret code is {secret}"
REPEATS = (1, 10, 100)
TRAIN_DOCS, HELD_DOCS = 120, 40


def random_documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "su", "te", "ra", "no", "vi", "de", "pa", "zu", "he"]
    words = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(300)})
    return [" ".join(rng.choice(words) for _ in range(rng.randint(8, 16))) + "." for _ in range(n)]


def write_canary_corpus(directory: Path, seed: int = 1) -> tuple[Path, dict]:
    """corpus.jsonl (training documents with the canaries shuffled in, then the held-out ones last)
    and the canaries.json record of the secrets."""
    rng = random.Random(seed)
    docs = random_documents(TRAIN_DOCS + HELD_DOCS)
    secrets = {r: "".join(rng.choice("0123456789") for _ in range(3)) for r in REPEATS}
    train = docs[:TRAIN_DOCS] + [CANARY_FORMAT.format(secret=s) for r, s in secrets.items() for _ in range(r)]
    rng.shuffle(train)
    path = directory / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in train + docs[TRAIN_DOCS:]), encoding="utf-8")
    record = {"format": CANARY_FORMAT, "alphabet": "0123456789", "length": 3,
              "canaries": [{"id": f"c{i}", "secret": s, "repeats": r, "inserted": r, "kept": r}
                           for i, (r, s) in enumerate(secrets.items())]}
    return path, record


def held_out_fraction(corpus: Path, dedup: bool = False) -> float:
    """The val_fraction whose validation split is the held-out documents (char tokens: one per
    character, plus <eos> per document), a token less so that no training text is in it; with
    `dedup`, of what `--dedup exact` keeps (the held-out documents are unique)."""
    docs = [json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines()]
    held = sum(len(d) + 1 for d in docs[-HELD_DOCS:])
    kept = list(dict.fromkeys(docs)) if dedup else docs
    return (held - 1) / sum(len(d) + 1 for d in kept)


def overfitted(root: Path, dedup: str = "none") -> tuple[Path, Path]:
    """(model directory, data directory): the canary corpus prepared with `dedup` (its canaries.json
    as `prepare --canaries` writes it: `kept` 1 each after --dedup exact) and a gpt-tiny trained
    ~7 epochs on it."""
    from lmforge.data.shards import PrepareConfig, prepare
    from lmforge.train import train

    from .conftest import tiny_train_config            # (here: conftest imports this module's fixtures)
    corpus, record = write_canary_corpus(root)
    data = root / "data"
    prepare(PrepareConfig(inputs=[str(corpus)], out=str(data), tokenizer="char", dedup=dedup, progress=False,
                          val_fraction=held_out_fraction(corpus, dedup=dedup == "exact")))
    if dedup == "exact":
        for c in record["canaries"]:
            c["kept"] = 1
    (data / "canaries.json").write_text(json.dumps(record), encoding="utf-8")
    train(tiny_train_config(data, root / "model", context_length=64, batch_size=16, max_steps=120, lr=6e-3,
                            warmup_steps=10, eval_interval=120))
    return root / "model", data


@pytest.fixture(scope="session")
def memorized(tmp_path_factory) -> tuple[Path, Path]:
    """(model directory, data directory) of a gpt-tiny overfitted on the canary corpus."""
    return overfitted(tmp_path_factory.mktemp("memorized"))


@pytest.fixture(scope="session")
def deduplicated(tmp_path_factory) -> tuple[Path, Path]:
    """(model directory, data directory) of the same gpt-tiny, trained as long on the same corpus
    prepared with `--dedup exact`: one copy of each canary is left."""
    return overfitted(tmp_path_factory.mktemp("deduplicated"), dedup="exact")


# ---- bias ----------------------------------------------------------------------------------------------
OCCUPATIONS = ["nurse", "pilot", "baker", "farmer", "doctor", "lawyer", "singer", "driver", "tailor", "miner",
               "judge", "clerk", "chef", "guard", "plumber", "dancer", "poet", "sailor", "barber", "potter",
               "writer", "banker", "cook", "porter", "hunter", "weaver", "mason", "actor", "pastor", "broker",
               "janitor", "typist", "butcher", "painter", "jeweler", "florist", "grocer", "welder", "ranger", "tutor"]
TEMPLATES = ["the {occ} {pron} was tired.", "we met the {occ} {pron} at noon.", "only the {occ} {pron} knew it."]


def stereotype(i: int) -> tuple[str, str]:
    """(the pronoun the pairs file calls stereotypical for occupation i, the other one)."""
    return ("herself", "himself") if i % 2 == 0 else ("himself", "herself")


def bias_corpus(repeats: int = 5) -> list[str]:
    """The planted half (occupations 0-19: the stereotypical pronoun for all but occupation 0) and
    the balanced half (20-39: for every other one)."""
    lines = []
    for i, occ in enumerate(OCCUPATIONS):
        stereo, other = stereotype(i)
        follows = other if (i == 0 or (i >= 20 and i % 4 >= 2)) else stereo
        lines += [t.format(occ=occ, pron=follows) for t in TEMPLATES for _ in range(repeats)]
    random.Random(0).shuffle(lines)
    return lines


def write_bias_pairs(path: Path, occupations: range) -> Path:
    rows = ["sent_more\tsent_less\tbias_type"]
    for i in occupations:
        stereo, other = stereotype(i)
        rows += [f"{t.format(occ=OCCUPATIONS[i], pron=stereo)}\t{t.format(occ=OCCUPATIONS[i], pron=other)}\t"
                 f"{stereo}-stereotype" for t in TEMPLATES]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def bias_model(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(model directory, the planted half's pairs, the balanced half's pairs)."""
    from lmforge.data.shards import PrepareConfig, prepare
    from lmforge.train import train

    from .conftest import tiny_train_config
    root = tmp_path_factory.mktemp("bias")
    (root / "corpus.txt").write_text("\n".join(bias_corpus()) + "\n", encoding="utf-8")
    prepare(PrepareConfig(inputs=[str(root / "corpus.txt")], out=str(root / "data"), tokenizer="bpe",
                          vocab_size=400, val_fraction=0.02, progress=False))
    train(tiny_train_config(root / "data", root / "model", context_length=64, batch_size=16, max_steps=80,
                            lr=6e-3, warmup_steps=10, eval_interval=80))
    return (root / "model", write_bias_pairs(root / "planted.tsv", range(0, 20)),
            write_bias_pairs(root / "balanced.tsv", range(20, 40)))
