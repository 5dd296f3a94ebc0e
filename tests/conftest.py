"""Shared fixtures: a small real-English corpus (from the standard library), prepared data
directories and a tiny trained model, built once per test session."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def char_data(tmp_path_factory, corpus_file) -> Path:
    from lmforge.data.shards import PrepareConfig, prepare
    out = tmp_path_factory.mktemp("data") / "char"
    prepare(PrepareConfig(inputs=[str(corpus_file)], out=str(out), tokenizer="char", val_fraction=0.1,
                          progress=False))
    return out


@pytest.fixture(scope="session")
def bpe_data(tmp_path_factory, corpus_file) -> Path:
    from lmforge.data.shards import PrepareConfig, prepare
    out = tmp_path_factory.mktemp("data") / "bpe"
    prepare(PrepareConfig(inputs=[str(corpus_file)], out=str(out), tokenizer="bpe", vocab_size=512,
                          val_fraction=0.1, progress=False))
    return out


def tiny_train_config(data: Path, out: Path, **kw):
    from lmforge.train import TrainConfig
    base = dict(data=str(data), out=str(out), preset="gpt-tiny", context_length=32, batch_size=8, max_steps=30,
                lr=3e-3, warmup_steps=5, eval_interval=15, eval_iters=2, log_interval=1, sample_interval=0,
                progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, char_data) -> Path:
    """A gpt-tiny model trained for 30 steps on the char corpus."""
    from lmforge.train import train
    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_train_config(char_data, out))
    return out
