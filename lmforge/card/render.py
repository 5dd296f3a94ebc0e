"""The card's two parts, from `Facts`: the metadata (Hugging Face's YAML front matter, with the
evaluation results as a `model-index`) and the Markdown sections lmforge writes (model details,
training data, training procedure, evaluation, audit, limitations)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..evaluate.baseline import BASELINE_NAMES, verdict
from .facts import Facts, hub_dataset

# what the card calls each training task
TASK_NAMES = {"clm": "causal language modelling", "mlm": "masked language modelling", "classify": "text classification",
              "seq2seq": "sequence to sequence (translation)", "sft": "instruction tuning (chat)",
              "distill": "distillation"}
# lmforge's score names -> (the Hub's metric id, what the card calls it); losses stay out of the model-index
METRICS = {"ppl": ("perplexity", "perplexity"), "accuracy": ("accuracy", "accuracy"),
           "macro_f1": ("f1", "macro F1"), "bleu": ("bleu", "BLEU"), "chrf": ("chrf", "chrF")}
AUDIT_TITLES = {"memorization": "Memorisation (k-extractability)", "canaries": "Canaries (exposure)",
                "membership": "Membership inference (loss)", "bias": "Bias (stereotype pairs)"}
# settings the card leaves out of the training procedure: where things are, and how the run was watched
NOT_PROCEDURE = {"data", "out", "progress", "device", "report_to", "sample_interval", "sample_tokens", "sample_prompt",
                 "overwrite", "resume", "force", "log_interval", "save_interval"}


def pipeline_tag(facts: Facts) -> str:
    """The Hub's name for what the model does."""
    config = facts.config
    if config.labels:
        return "text-classification"
    if config.family == "decoder":
        return "text-generation"
    if config.family == "seq2seq":
        return "translation"
    return "fill-mask" if config.mlm_head else "sentence-similarity"


def results(facts: Facts) -> list[dict[str, Any]]:
    """[{"split", "data", "scores": {name: value}}]: the evaluation of the weights the directory holds
    (the kept best one, else the last; the validation split), then the task's final reports (a
    report on the validation split replaces the evaluation)."""
    found: dict[str, dict[str, Any]] = {}
    scores = {k[4:]: v for k, v in (facts.kept or facts.last_eval).items()
              if k.startswith("val_") and isinstance(v, (int, float))}
    if scores:
        found["validation"] = {"split": "validation", "data": facts.settings.get("data"), "scores": scores}
    for report in facts.reports:
        split = {"val": "validation"}.get(report.get("split"), report.get("split"))
        scores = {k: report[k] for k in METRICS if isinstance(report.get(k), (int, float))}
        if isinstance(split, str) and scores:
            found[split] = {"split": split, "data": report.get("data") or facts.settings.get("data"), "scores": scores}
    return list(found.values())


def model_index(facts: Facts, found: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The evaluation results `found` (`results(facts)`) as the Hub's `model-index` (None when
    there are none, or the data they were measured on is not known)."""
    entries = []
    for r in found:
        metrics = [{"type": METRICS[k][0], "value": round(float(v), 4), "name": f"{r['split']} {METRICS[k][1]}"}
                   for k, v in r["scores"].items() if k in METRICS]
        if not metrics or not isinstance(r["data"], str):
            continue
        dataset_id = hub_dataset(facts) or r["data"].rstrip("/").rsplit("/", 1)[-1]
        task = {"type": pipeline_tag(facts), **({"name": TASK_NAMES.get(facts.task, facts.task)} if facts.task else {})}
        entries.append({"task": task, "dataset": {"type": dataset_id, "name": r["data"], "split": r["split"]},
                        "metrics": metrics})
    return [{"name": facts.name, "results": entries}] if entries else None


def metadata(facts: Facts, library_name: str = "lmforge") -> dict[str, Any]:
    """The front matter lmforge knows (license and language are the user's: `files.merge_metadata`)."""
    tags = ["lmforge", facts.config.family] + [t for t in (facts.task, "lora" if facts.lora else None) if t]
    meta: dict[str, Any] = {"library_name": library_name, "pipeline_tag": pipeline_tag(facts), "tags": tags}
    dataset, found = hub_dataset(facts), results(facts)
    if dataset:
        meta["datasets"] = [dataset]
    metric_ids = sorted({METRICS[k][0] for r in found for k in r["scores"] if k in METRICS})
    if metric_ids:
        meta["metrics"] = metric_ids
    index = model_index(facts, found)
    if index:
        meta["model-index"] = index
    return meta


# ---------------------------------------------------------------------------------------------- Markdown
def cell(value: Any) -> str:
    """A value as one Markdown table cell."""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, dict):
        text = ", ".join(f"{k}: {cell(v)}" for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        shown = ", ".join(cell(v) for v in value[:8])
        text = shown + (f", … ({len(value)} in all)" if len(value) > 8 else "")
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[tuple[Any, Any]], head: tuple[str, str] = ("", "")) -> str:
    return "\n".join([f"| {head[0]} | {head[1]} |", "|---|---|", *(f"| {cell(k)} | {cell(v)} |" for k, v in rows)])


def details(facts: Facts) -> str:
    c = facts.config
    shape = (f"{c.n_layer} layers × {c.d_model} wide, {c.n_head} heads ({c.kv_heads} key/value), context "
             f"{c.context_length} tokens, {c.position} positions, {c.norm} ({c.norm_position}), {c.mlp} MLP")
    if c.family == "seq2seq":
        shape = f"{c.n_encoder_layer or c.n_layer} encoder + " + shape.replace("layers", "decoder layers", 1)
    preset = facts.settings.get("preset") if not facts.settings.get("init_from") else None   # ignored by a fine-tune
    rows: list[tuple[Any, Any]] = [("family", c.family), *([("preset", preset)] if preset else []),
                                   ("shape", shape), ("parameters", f"{facts.params / 1e6:.2f}M ({facts.params:,})")]
    if facts.tokenizer is not None:
        t = facts.tokenizer
        specials = " ".join(f"`{tok}`" for tok in t.special.values() if tok)
        rows.append(("tokenizer", f"{t.kind}, {t.vocab_size:,} tokens" + (f"; special tokens {specials}" if specials
                                                                          else "")))
    if c.labels:
        rows.append(("labels", c.labels))
    if facts.settings.get("init_from"):
        rows.append(("started from", f"`{facts.settings['init_from']}` (fine-tuned)"))
    if facts.source:
        rows.append(("weights from", facts.source))
    if isinstance(facts.lora, dict):
        lora = facts.lora.get("lora") if isinstance(facts.lora.get("lora"), dict) else {}
        rows.append(("LoRA adapters", {**{k.removeprefix("lora_"): v for k, v in lora.items() if v not in ([], None)},
                                       "on the base": facts.lora.get("base_model")}))
    if c.quantization:
        rows.append(("quantization", c.quantization))
    return "## Model details\n\n" + table(rows)


def training_data(facts: Facts) -> str:
    data = facts.settings.get("data")
    if facts.data is not None:
        text = (f"Prepared by `lmforge prepare` into `{data}`; its `meta.json` records:\n\n"
                + table([(k, v) for k, v in facts.data.items()]))
    elif isinstance(data, str) and Path(data).is_file():
        text = (f"`{data}`, read by the {facts.task} task (its columns and splits are among the settings below; "
                f"`lmforge prepare` records nothing for a table).")
    elif isinstance(data, str):
        text = (f"`{data}` (the `--data` of the run): not found from where this card was written, so what it held "
                f"is not repeated here.")
    elif facts.source:
        text = (f"Not recorded here: the weights were imported ({facts.source}); the original model's card says what "
                f"it was trained on.")
    else:
        text = "Not recorded: this model was not trained by `lmforge train` (it was saved from Python or imported)."
    return "## Training data\n\n" + text


def procedure(facts: Facts) -> str:
    if not facts.settings:
        return "## Training procedure\n\nNot recorded (no `train_config.yaml` in the model directory)."
    skip = NOT_PROCEDURE | ({"preset"} if facts.settings.get("init_from") else set())
    rows = [(k, v) for k, v in facts.settings.items() if k not in skip and v not in (None, [], "")]
    text = "The run's settings (`train_config.yaml`):\n\n" + table(rows, ("setting", "value"))
    last = facts.last_train
    if last.get("step") is not None:
        seen = f", {last['tokens']:,} tokens seen" if isinstance(last.get("tokens"), int) else ""
        loss = f", training loss {last['loss']:.4f}" if isinstance(last.get("loss"), (int, float)) else ""
        text += f"\n\nThe last logged step: {last['step']}{seen}{loss}."
    return "## Training procedure\n\n" + text


def evaluation(facts: Facts) -> str:
    rows = []
    for r in results(facts):
        for k, v in r["scores"].items():
            name = METRICS[k][1] if k in METRICS else k.replace("_", " ")
            rows.append(f"| {cell(r['split'])} | {cell(r['data'] or '—')} | {name} | {v:.4f} |")
    if not rows:
        return "## Evaluation\n\nNo evaluation is recorded (no evaluation row in `metrics.jsonl`, no final report)."
    step, kept = facts.last_eval.get("step"), facts.kept.get("best_step")
    if kept is not None:
        lead = (f"At the best evaluation (step {kept}; the last was step {step}), whose weights this directory "
                f"holds, and in the final reports:")
    else:
        lead = f"At the last evaluation (step {step}) and in the final reports:" if step is not None else "Scores:"
    baseline_rows, verdicts = baselines(facts)
    return "\n".join(["## Evaluation", "", lead, "", "| split | data | metric | value |", "|---|---|---|---|", *rows,
                      *baseline_rows, *(["", *verdicts] if verdicts else [])])


def baselines(facts: Facts) -> tuple[list[str], list[str]]:
    """The TF-IDF + logistic regression baselines a classifier's final report scored on its split
    (table rows), and whether the model is behind or ahead of the better one (a sentence each)."""
    rows, verdicts = [], []
    for report in facts.reports:
        found = report.get("baseline")
        if not isinstance(found, dict) or not isinstance(report.get("macro_f1"), (int, float)):
            continue
        scores = {k: m for k, m in found.items() if k in BASELINE_NAMES and isinstance(m, dict)
                  and all(isinstance(m.get(x), (int, float)) for x in ("accuracy", "macro_f1"))}
        split = {"val": "validation"}.get(report.get("split"), report.get("split"))
        data = report.get("data") or facts.settings.get("data") or "—"
        rows += [f"| {cell(split)} | {cell(data)} | TF-IDF {BASELINE_NAMES[k]} + logistic regression: "
                 f"{METRICS[x][1]} | {m[x]:.4f} |" for k, m in scores.items() for x in ("accuracy", "macro_f1")]
        rows_note = f" ({report['examples']} rows)" if isinstance(report.get("examples"), int) else ""
        said = verdict(float(report["macro_f1"]), scores, f"the {split} split{rows_note}") if scores else None
        verdicts += [said[0].upper() + said[1:] + "."] if said else []
    return rows, verdicts


def audit_section(name: str, entry: Any) -> str:
    title = AUDIT_TITLES.get(name, name.replace("_", " ").capitalize())
    if not isinstance(entry, dict):
        return f"### {title}\n\nThe entry in `audit.json` is not an object; run the audit again."
    lines = [f"### {title}", "", str(entry.get("summary") or "(no summary recorded)")]
    settings = entry.get("settings")
    if isinstance(settings, dict) and settings:
        lines += ["", "Settings: " + ", ".join(f"{k}={cell(v)}" for k, v in settings.items())
                  + (f" (run {entry['when']})." if entry.get("when") else ".")]
    scalars = [(k, v) for k, v in (entry.get("results") or {}).items()
               if isinstance(v, (int, float, str, bool))] if isinstance(entry.get("results"), dict) else []
    if scalars:
        lines += ["", table(scalars, ("result", "value"))]
    return "\n".join(lines)


def audit(facts: Facts) -> str:
    if not facts.audit:
        return ("## Audit\n\nNo audit has been run on this model. `lmforge audit memorization|canaries|membership|bias "
                "MODEL ...` measures what it memorised and whom it is biased against, and records it here.")
    order = [k for k in AUDIT_TITLES if k in facts.audit] + sorted(k for k in facts.audit if k not in AUDIT_TITLES)
    return "## Audit\n\nWhat the audits found (`audit.json`; the full results are there).\n\n" + "\n\n".join(
        audit_section(k, facts.audit[k]) for k in order)


def limitations(facts: Facts) -> str:
    c = facts.config
    items = [f"It reads at most {c.context_length} tokens at a time; text beyond that is not seen."]
    if c.family in ("decoder", "seq2seq"):
        items.append("It writes what is likely after its training data, not what is true: check what it says, and "
                     "expect it to repeat passages of that data.")
    if facts.params < 100_000_000:
        items.append(f"At {facts.params / 1e6:.2f}M parameters it is a small model: fluent at best in the style of its "
                     f"training data, and weak outside it.")
    items.append("It carries the biases of its training data; the audit above measures only what was asked of it.")
    if facts.settings.get("max_steps") and isinstance(facts.last_train.get("step"), int) \
            and facts.last_train["step"] < facts.settings["max_steps"]:
        items.append(f"The run stopped at step {facts.last_train['step']} of {facts.settings['max_steps']}.")
    return "## Limitations\n\n" + "\n".join(f"- {item}" for item in items)


def body(facts: Facts) -> str:
    """The Markdown sections lmforge owns (what goes between the card's markers)."""
    c = facts.config
    kind = "classifier" if c.labels else {"decoder": "decoder-only language model", "encoder": "encoder",
                                          "seq2seq": "encoder-decoder"}[c.family]
    task = f", trained for {TASK_NAMES.get(facts.task, facts.task)}" if facts.task else ""
    lead = f"# {facts.name}\n\nA {facts.params / 1e6:.2f}M-parameter transformer {kind}{task}, made with lmforge."
    return "\n\n".join([lead, details(facts), training_data(facts), procedure(facts), evaluation(facts),
                        audit(facts), limitations(facts)])
