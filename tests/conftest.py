"""Shared fixtures: a small real-English corpus (from the standard library), prepared data
directories and a tiny trained model, built once per test session."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def corpus_text(n_chars: int = 60_000) -> str:
    from lmforge.quickstart import pydoc_corpus
    return pydoc_corpus()[:n_chars]


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(corpus_text(), encoding="utf-8")
    return path


def prepared(tmp_path_factory, corpus_file: Path, tokenizer: str, **kw) -> Path:
    """The test corpus prepared with `tokenizer` into a fresh data directory."""
    from lmforge.data.shards import PrepareConfig, prepare
    out = tmp_path_factory.mktemp("data") / tokenizer
    prepare(PrepareConfig(inputs=[str(corpus_file)], out=str(out), tokenizer=tokenizer, val_fraction=0.1,
                          progress=False, **kw))
    return out


@pytest.fixture(scope="session")
def char_data(tmp_path_factory, corpus_file) -> Path:
    return prepared(tmp_path_factory, corpus_file, "char")


@pytest.fixture(scope="session")
def bpe_data(tmp_path_factory, corpus_file) -> Path:
    return prepared(tmp_path_factory, corpus_file, "bpe", vocab_size=512)


def tiny_train_config(data: Path, out: Path, **kw):
    from lmforge.train import TrainConfig
    base = dict(data=str(data), out=str(out), preset="gpt-tiny", context_length=32, batch_size=8, max_steps=30,
                lr=3e-3, warmup_steps=5, eval_interval=15, eval_iters=2, log_interval=1, sample_interval=0,
                progress=False, device="cpu")
    base.update(kw)
    from lmforge.options import build_flat
    return build_flat(TrainConfig, base)          # flat names: context_length etc. go to the model overrides


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, char_data) -> Path:
    """A gpt-tiny model trained for 30 steps on the char corpus."""
    from lmforge.train import train
    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_train_config(char_data, out))
    return out


# ---- encoder / classification / seq2seq data: small, synthetic, made here -----------------------------
TOPICS = {"animals": ["cat", "dog", "horse", "bird", "fish", "cow"],
          "food": ["bread", "apple", "soup", "rice", "cheese", "tea"],
          "tech": ["computer", "python", "linux", "code", "server", "disk"]}
EN_ZH = {"cat": "猫", "dog": "狗", "bird": "鸟", "big": "大", "small": "小", "red": "红", "old": "老"}


def topic_rows(n: int = 240, seed: int = 0) -> list[tuple[str, str]]:
    """(text, label) rows whose label is the topic of the two content words."""
    import random
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(TOPICS))
        a, b = rng.sample(TOPICS[label], 2)
        rows.append((f"I think the {a} is next to the {b}", label))
    return rows


def pair_rows(n: int = 300, seed: int = 0) -> list[tuple[str, str]]:
    """(english, chinese) rows of a tiny word-for-word language: "a big cat" -> "一只大猫"."""
    import random
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        adj, noun = rng.choice(["big", "small", "red", "old"]), rng.choice(["cat", "dog", "bird"])
        rows.append((f"a {adj} {noun}", f"一只{EN_ZH[adj]}{EN_ZH[noun]}"))
    return rows


def write_topics_csv(path: Path, n: int = 240) -> Path:
    import csv
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(topic_rows(n))
    return path


def write_pairs_tsv(path: Path, n: int = 300) -> Path:
    path.write_text("en\tzh\n" + "".join(f"{en}\t{zh}\n" for en, zh in pair_rows(n)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def wordpiece_data(tmp_path_factory, corpus_file) -> Path:
    return prepared(tmp_path_factory, corpus_file, "wordpiece", vocab_size=600)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, wordpiece_data) -> Path:
    """A bert-tiny encoder pretrained with masked LM for 30 steps."""
    from lmforge.train import train
    out = tmp_path_factory.mktemp("runs") / "encoder"
    train(tiny_train_config(wordpiece_data, out, preset="bert-tiny", task="mlm", lr=2e-3))
    return out


@pytest.fixture(scope="session")
def topics_csv(tmp_path_factory) -> Path:
    return write_topics_csv(tmp_path_factory.mktemp("tables") / "topics.csv")


@pytest.fixture(scope="session")
def pairs_tsv(tmp_path_factory) -> Path:
    return write_pairs_tsv(tmp_path_factory.mktemp("tables") / "pairs.tsv")


def edit_hf_dir(src: Path, dst: Path, config: dict | None = None, tensors: dict | None = None) -> Path:
    """A copy of HF dir `src` with config.json fields / safetensors entries changed (None deletes)."""
    from safetensors.torch import load_file, save_file
    shutil.copytree(src, dst)
    if config:
        cfg = json.loads((dst / "config.json").read_text())
        cfg.update(config)
        (dst / "config.json").write_text(json.dumps(cfg))
    if tensors:
        weights = load_file(dst / "model.safetensors")
        weights.update(tensors)
        save_file({k: v for k, v in weights.items() if v is not None}, dst / "model.safetensors", {"format": "pt"})
    return dst


from .audit_corpora import bias_model, deduplicated, memorized  # noqa: E402,F401  (the audits' planted models, shared)
