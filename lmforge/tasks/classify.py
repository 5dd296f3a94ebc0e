"""Text classification (task `classify`): labelled rows of a table (`data/tables.py`) -> padded
batches, the cross-entropy loss on the model's classification head, validation accuracy /
macro-F1, and a final test report (JSON + confusion-matrix PNG) in the model directory. Also
the batched inference the `classify` and `embed` verbs use (`predict_proba`, `map_batches`).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from ..data.batching import EpochOrder, length_grouped
from ..data.classify import collate_examples, encode_for_classification, sort_labels
from ..data.tables import TableConfig, read_table, split_indices, table_tokenizer
from ..errors import ConfigError, DataError, LmforgeError
from ..options import between, option
from .base import Task, frequency_entropy, unwrap


@dataclass
class ClassifyConfig(TableConfig):
    text_column: str = option("text", "table column holding the text to classify")
    label_column: str = option("label", "table column holding the class label")
    text_pair_column: str | None = option(None, "optional column with a second text (sentence-pair tasks); an "
                                                "encoder sees it as segment 1")
    class_weights: bool = option(False, "weight the loss by inverse class frequency (imbalanced labels)")
    label_smoothing: float = option(0.0, "spread this share of each training target over all the labels (as "
                                         "transformers' label_smoothing_factor): a softer target that overfits "
                                         "a small table less", check=between(0, 1, high_open=True))
    group_by_length: bool = option(False, "draw each training batch from texts of similar length, as "
                                          "transformers' group_by_length does: a batch pads to its own longest "
                                          "text, so a step costs less where texts differ in length (batches "
                                          "are less mixed; off by default: see the docs' measurements)")
    baseline: bool = option(True, "also fit TF-IDF + logistic regression (word and character n-grams, scikit-learn: "
                                  "pip install \"lmforge[baseline]\") on the same split and report it beside the "
                                  "model", saved=False)


def segments(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The segment ids of a batch as keyword arguments, for a model that has segment embeddings."""
    config = unwrap(model).config                     # under DDP, `model` wraps it
    return {"type_ids": batch["types"]} if config.family == "encoder" and config.type_vocab_size else {}


def class_logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, C) logits through the model's forward (segment ids only where the model has them)."""
    return model(batch["x"], key_valid=batch["valid"], head="classify", **segments(model, batch))


def predict_proba(model, tokenizer, texts: list[str], pairs: list[str] | None = None, *,
                  batch_size: int = 64) -> torch.Tensor:
    """Class probabilities (N, C) for `texts` (and second texts `pairs`), in input order."""
    if not model.config.labels:
        raise ConfigError("this model has no classification head (config.json lists no labels); fine-tune it with "
                          "`lmforge finetune MODEL_DIR --task classify --data FILE`")
    ids, types, _ = encode_for_classification(tokenizer, model.config.family, texts, pairs,
                                              model.config.context_length)
    return predict_encoded(model, ids, types, tokenizer.pad_id or 0, batch_size=batch_size)


def mean_proba(members: list[tuple[Any, Any]], texts: list[str], pairs: list[str] | None = None, *,
               batch_size: int = 64) -> torch.Tensor:
    """The mean of the class probabilities (N, C) of several classifiers with the same labels
    ((module, tokenizer) pairs: an ensemble, as scikit-learn's soft voting), in input order."""
    return sum(predict_proba(module, tokenizer, texts, pairs, batch_size=batch_size)
               for module, tokenizer in members) / len(members)


def same_labels(members: list[tuple[str, list[str]]]) -> list[str]:
    """The labels of an ensemble's members ((name, labels) each), once every member has the first's
    in the same order (fine-tunes of one table); else an error naming the first that differs."""
    labels = list(members[0][1])
    for name, other in members[1:]:
        if list(other) != labels:
            raise LmforgeError(f"an ensemble's classifiers must have the same labels in the same order: {name} has "
                               f"{list(other)}, not {labels}; ensemble fine-tunes of the same table")
    return labels


def ensemble_split_scores(model_dirs: list[str | Path], data: str | Path, o: ClassifyConfig,
                          split: str = "test") -> dict[str, Any]:
    """Metrics (`evaluate.classification.label_metrics`) of the averaged probabilities of the
    classifiers in `model_dirs`, fine-tuned on table `data`, on its `split` (as a run splits it)."""
    from ..adapt.runs import load_for_inference
    from ..evaluate.classification import label_metrics
    rows = read_table(data, [o.text_column, o.label_column])
    picked = [rows[i] for i in split_rows(rows, o)[split]]
    members = [load_for_inference(d, device="cpu")[::2] for d in model_dirs]         # (module, tokenizer)
    labels = same_labels([(str(d), m.config.labels) for d, (m, _) in zip(model_dirs, members)])
    probs = mean_proba(members, [r[o.text_column] for r in picked])
    return label_metrics(labels, [r[o.label_column] for r in picked], [labels[int(i)] for i in probs.argmax(-1)])


def predict_encoded(model, ids: list[list[int]], types: list[list[int]], pad_id: int, *, batch_size: int = 64,
                    autocast=None) -> torch.Tensor:
    """Class probabilities (N, C) of encoded examples (batched by length, returned in input order)."""
    return map_batches(model, ids, types, pad_id, lambda m, batch: class_logits(m, batch).float().softmax(-1),
                       (len(model.config.labels),), batch_size=batch_size, autocast=autocast)


@torch.inference_mode()
def map_batches(model, ids: list[list[int]], types: list[list[int]], pad_id: int,
                fn: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor], shape: tuple[int, ...], *,
                batch_size: int = 64, autocast=None) -> torch.Tensor:
    """fn(model, padded batch) -> (b, *shape) for encoded examples batched by length (little
    padding), in eval mode; returns (N, *shape) float32 on the CPU, in input order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.empty(len(ids), *shape)
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        batch = collate_examples([ids[i] for i in chunk], [types[i] for i in chunk], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast() if autocast is not None else contextlib.nullcontext():
            out[chunk] = fn(model, batch).float().cpu()
    model.train(was_training)
    return out


def split_rows(rows: list[dict[str, str]], o: ClassifyConfig) -> dict[str, list[int]]:
    """The seeded, label-stratified train / val / test split of a table's rows."""
    return split_indices(len(rows), o.val_fraction, o.test_fraction, o.split_seed,
                         strata=[r[o.label_column] for r in rows])


def training_texts(path: str | Path, options: ClassifyConfig | None = None) -> list[str]:
    """The texts of the rows `--task classify` trains on (its validation and test rows left out):
    unlabelled text for pretraining an encoder that never sees the held-out rows."""
    o = options or ClassifyConfig()
    rows = read_table(path, [o.text_column, o.label_column], (),
                      {o.text_column: "--text-column", o.label_column: "--label-column"})
    return [rows[i][o.text_column] for i in split_rows(rows, o)["train"]]


def baseline_text(row: dict[str, str], o: ClassifyConfig) -> str:
    """What the TF-IDF baseline reads of a row: its text (and second text, on a line of its own)."""
    return row[o.text_column] + (f"\n{row[o.text_pair_column]}" if o.text_pair_column else "")


def label_entropy(y: torch.Tensor, n_labels: int) -> float:
    """The cross-entropy of always predicting the label frequencies of `y` (ln 2 for two balanced classes)."""
    return frequency_entropy(torch.bincount(y, minlength=n_labels))


class ClassificationTask(Task):
    name = "classify"
    in_passes = True
    selection = ("val_macro_f1", "max")     # what a user reads off a classifier; the loss keeps falling past it

    def __init__(self, path: str | Path, config, tokenizer, options: ClassifyConfig | None = None):
        o = self.options = options or ClassifyConfig()
        self.path, self.family = Path(path), config.family
        if self.family not in ("encoder", "decoder"):
            raise ConfigError(f"classification needs an encoder or a decoder model, not a {self.family}; start from "
                              f"a bert-* or gpt-* / llama-* model")
        flags = {o.text_column: "--text-column", o.label_column: "--label-column"}
        if o.text_pair_column:
            flags[o.text_pair_column] = "--text-pair-column"
        rows = read_table(path, [o.text_column, o.label_column], (o.text_pair_column,), flags)
        found = sort_labels({r[o.label_column] for r in rows})
        if len(found) < 2:
            raise DataError(f"{path}: column {o.label_column!r} holds a single label ({found[0]!r}) in {len(rows)} "
                            f"rows; a classifier needs examples of at least two classes")
        if config.labels and set(found) <= set(config.labels):
            self.labels = list(config.labels)                        # keep the model's head and its order
        else:
            if config.labels:
                warnings.warn(f"the model's head knows labels {config.labels}; {path} has {found} — training a new "
                              f"classification head for these", stacklevel=2)
            self.labels = found
        if tokenizer is None:                                        # training from scratch: a tokenizer for it
            tokenizer = table_tokenizer(o, [r[o.text_column] for r in rows])
            self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_id or 0
        y = [self.labels.index(r[o.label_column]) for r in rows]
        ids, types, truncated = encode_for_classification(
            tokenizer, self.family, [r[o.text_column] for r in rows],
            [r[o.text_pair_column] for r in rows] if o.text_pair_column else None, config.context_length)
        if truncated:
            warnings.warn(f"{truncated} of {len(rows)} texts of {path} are longer than the model's context of "
                          f"{config.context_length} tokens and were truncated", stacklevel=2)
        splits = split_rows(rows, o)
        self.splits = {s: ([ids[i] for i in idx], [types[i] for i in idx], torch.tensor([y[i] for i in idx]))
                       for s, idx in splits.items()}
        self.texts = {s: [baseline_text(rows[i], o) for i in idx] for s, idx in splits.items()}
        self.lengths = torch.tensor([len(x) for x in self.splits["train"][0]])
        self.baselines: dict[str, Any] | None = None                    # fitted by `baseline()`
        counts = torch.bincount(self.splits["train"][2], minlength=len(self.labels)).float()
        self.weights = None
        if o.class_weights:
            self.weights = counts.sum() / (len(self.labels) * counts.clamp(min=1))   # inverse frequency, mean 1
        print(f"classification data {path}: {len(rows)} rows, {len(self.labels)} labels, split "
              + ", ".join(f"{s} {len(v[0])}" for s, v in self.splits.items()))

    def model_changes(self) -> dict[str, Any]:
        changes: dict[str, Any] = {"labels": self.labels}
        if self.tokenizer is not None:
            changes["vocab_size"] = self.tokenizer.vocab_size
        return changes

    def frozen(self, config) -> tuple[str, ...]:
        unused = ("mlm_head.", "lm_head.")            # tied output matrices stay trainable through the embedding
        return unused + (("pooler.",) if config.pool_method != "cls" else ())

    def sample(self, split: str, n: int, generator: torch.Generator) -> torch.Tensor:
        if split == "train" and self.options.group_by_length:
            return length_grouped(self.lengths, n, generator)
        return torch.randint(len(self.splits[split][0]), (n,), generator=generator)

    def train_examples(self) -> int:
        return len(self.splits["train"][0])

    def epoch_order(self, seed: int, per_step: int) -> EpochOrder:
        return EpochOrder(self.train_examples(), seed, per_step, self.lengths if self.options.group_by_length else None)

    def collate(self, split: str, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        ids, types, y = self.splits[split]
        idx = indices.tolist()
        batch = collate_examples([ids[i] for i in idx], [types[i] for i in idx], self.pad_id)
        batch["y"] = y[indices]
        return batch

    def loss(self, model, batch):
        logits = class_logits(model, batch)
        weight = self.weights.to(logits.device) if self.weights is not None else None
        return F.cross_entropy(logits.float(), batch["y"], weight=weight, label_smoothing=self.options.label_smoothing)

    def tokens_in(self, batch):
        return int(batch["valid"].sum())

    def constant_loss(self) -> float | None:
        if self.weights is not None:
            return None                     # a weighted loss: the frequencies are no longer the optimum
        return label_entropy(self.splits["train"][2], len(self.labels))

    def _metrics(self, model, split: str, autocast) -> dict[str, Any]:
        from ..evaluate.classification import classification_metrics
        ids, types, y = self.splits[split]
        probs = predict_encoded(model, ids, types, self.pad_id, autocast=autocast)
        return classification_metrics(y, probs.argmax(-1), self.labels)

    def evaluate(self, model, device, autocast) -> dict[str, float]:
        m = self._metrics(model, "val", autocast)
        return {"val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"]}

    def baseline(self) -> tuple[dict[str, float], str] | None:
        if not self.options.baseline:
            return None
        from ..evaluate.baseline import describe, fit_baselines, flat_scores
        self.baselines = fit_baselines(self.texts["train"], [self.labels[i] for i in self.splits["train"][2]])
        if not self.baselines:
            return None
        scores = self._baseline_scores("val")
        return flat_scores(scores, "val"), describe(scores, f"the validation split ({len(self.texts['val'])} rows)")

    def _baseline_scores(self, split: str) -> dict[str, dict[str, Any]]:
        """The fitted baselines on `split`, scored as the model is (`classification_metrics` over its labels)."""
        from ..evaluate.baseline import score_baselines
        from ..evaluate.classification import classification_metrics
        y = self.splits[split][2]
        return score_baselines(self.baselines or {}, self.texts[split],
                               lambda pred: classification_metrics(y, [self.labels.index(p) for p in pred],
                                                                   self.labels))

    def report(self, model, out_dir: Path, device, autocast) -> dict[str, Any]:
        from ..evaluate.baseline import describe, flat_scores, verdict
        from ..evaluate.classification import format_metrics, write_report
        split = "test" if len(self.splits["test"][0]) else "val"
        m = self._metrics(model, split, autocast)
        scores = self._baseline_scores(split) if self.baselines else {}
        extra = {"split": split, "data": str(self.path)}
        if scores:
            extra["baseline"] = {k: {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"]} for k, s in scores.items()}
        json_path, png_path = write_report(m, out_dir, extra)
        print(f"\n{split} set ({m['examples']} examples):\n{format_metrics(m, top=30)}")
        print(f"wrote {json_path} and {png_path}")
        out = {f"{split}_accuracy": m["accuracy"], f"{split}_macro_f1": m["macro_f1"]}
        if scores:
            where = f"the {'test' if split == 'test' else 'validation'} split ({m['examples']} rows)"
            print(describe(scores, where))
            out.update(flat_scores(scores, split), baseline_verdict=verdict(m["macro_f1"], scores, where))
        return out


def build(cfg, config: ModelConfig, tokenizer) -> ClassificationTask:
    return ClassificationTask(cfg.data, config, tokenizer, cfg.options_for(ClassifyConfig))


def _fit_on_table(data: str | Path, o: ClassifyConfig) -> tuple[dict[str, Any] | None, list[dict[str, str]],
                                                                    dict[str, list[int]]]:
    """The TF-IDF baselines fitted on the training split of table `data` as options `o` split it (the
    split a classifier trained with `o` gets): (fitted or None without scikit-learn, rows, split)."""
    from ..evaluate.baseline import fit_baselines
    rows = read_table(data, [o.text_column, o.label_column], (o.text_pair_column,))
    split = split_rows(rows, o)
    train = split["train"]
    return (fit_baselines([baseline_text(rows[i], o) for i in train], [rows[i][o.label_column] for i in train]),
            rows, split)


def table_baselines(data: str | Path, o: ClassifyConfig, split: str = "test") -> dict[str, dict[str, Any]] | None:
    """What TF-IDF + logistic regression (word, char) trained on the training split of table `data`
    scores on its `split`, as `label_metrics` scores a classifier: {kind: metrics}; None without
    scikit-learn (it warned)."""
    from ..evaluate.baseline import score_baselines
    from ..evaluate.classification import label_metrics
    fitted, rows, idx = _fit_on_table(data, o)
    if fitted is None:
        return None
    labels = sorted({rows[i][o.label_column] for i in idx["train"]})
    gold = [rows[i][o.label_column] for i in idx[split]]
    return score_baselines(fitted, [baseline_text(rows[i], o) for i in idx[split]],
                           lambda pred: label_metrics(labels, gold, pred))


def baseline_for_file(model_dir: str | Path, labels: list[str], texts: list[str],
                      truth: list[str | None]) -> tuple[dict[str, dict[str, Any]], str] | str | None:
    """The TF-IDF baselines fitted on the training rows of the table the classifier in `model_dir`
    was trained on (as its train_config.yaml records it: the same split), scored on (texts, truth)
    as `label_metrics` scores the model: ({kind: metrics}, what was scored). A string says why there
    is none; None: scikit-learn is missing (it warned)."""
    import dataclasses
    from ..evaluate.baseline import score_baselines
    from ..evaluate.classification import label_metrics
    from ..runfile import TRAIN_CONFIG_FILE, read_run_file
    run_file = Path(model_dir) / TRAIN_CONFIG_FILE
    saved = read_run_file(run_file) if run_file.is_file() else {}
    data = saved.get("data")
    if saved.get("task") != "classify" or not data:
        return f"no TF-IDF baseline: {model_dir} records no classification table it was trained on ({TRAIN_CONFIG_FILE})"
    if not Path(data).exists():
        return f"no TF-IDF baseline: {data}, the table {model_dir} was trained on, is not found from here"
    o = ClassifyConfig(**{f.name: saved[f.name] for f in dataclasses.fields(ClassifyConfig) if f.name in saved})
    fitted = _fit_on_table(data, o)[0]
    if fitted is None:
        return None

    def score(pred: list[str]) -> dict[str, Any] | None:
        with warnings.catch_warnings():                     # unseen labels: the model's own scores warned once
            warnings.simplefilter("ignore")
            return label_metrics(labels, truth, pred)
    return score_baselines(fitted, texts, score), f"these rows (trained on the training split of {data})"
