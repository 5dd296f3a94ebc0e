"""Pretrain, then fine-tune: an encoder learns language from unlabelled text with the masked-LM
objective, then becomes a topic classifier. Every step is lmforge's own; no external weights.

    python examples/pretrain_finetune_topics.py                       # the fortunes topics of the shared kit
    python examples/pretrain_finetune_topics.py --data my_labels.tsv --corpus more_text.txt --out runs/recipe

1. unlabelled text: the table's own training texts (its validation and test rows are left out,
   so pretraining never sees what the classifier is judged on), the Python reference text that
   ships with Python, and any `--corpus` files;
2. `prepare` it with a WordPiece tokenizer; `train --task mlm` a bert-tiny on it (Muon);
3. `finetune --task classify` the pretrained encoder on the labelled table, twice by default
   (`--members`, seeds `--seed` and `--seed` + 1; the fine-tune defaults: Muon at a quarter of its
   pretraining rate), and average the two classifiers' probabilities (`lmforge classify A --ensemble B`);
4. print test-set macro-F1 / accuracy of each fine-tune and of the average, beside TF-IDF +
   logistic regression when scikit-learn is installed, and with `--from-scratch` the same
   classifier trained from scratch for as many steps as pretraining and fine-tuning together
   (about the same CPU time).

On 2 CPU cores with the defaults (fortunes topics): about 18 minutes; test macro-F1 0.540 and
0.542 for the two fine-tunes averaged (`--seed` 1337 and 2), 0.498 to 0.528 for a single
fine-tune, against 0.526 for TF-IDF over characters (docs/finetuning.md, "Pretrain, then
fine-tune"). On movie-review sentiment (examples/sentiment_table.py; 14 minutes) it does not get
there: accuracy 0.750 for the two averaged against 0.783 for TF-IDF over words.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_TABLE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "fortunes_topics.tsv")  # ../shared


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=DEFAULT_TABLE, help="labelled CSV / TSV / JSONL table")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--corpus", nargs="*", default=[], help="more unlabelled text files for pretraining")
    p.add_argument("--out", default="runs/recipe", help="directory for the data, the encoder and the classifier")
    p.add_argument("--preset", default="bert-tiny")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--pretrain-steps", type=int, default=4000)
    p.add_argument("--finetune-steps", type=int, default=2000, help="steps of each fine-tune")
    p.add_argument("--members", type=int, default=2, help="fine-tunes of the encoder, each with its own seed, "
                   "whose probabilities are averaged (`lmforge classify A --ensemble B`); 1: a single classifier")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=None, help="seed of the pretraining; fine-tune k takes seed + k "
                   "(default: the training default, 1337)")
    p.add_argument("--from-scratch", action="store_true", help="also train the same classifier from scratch")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    import lmforge
    from lmforge.errors import LmforgeError
    from lmforge.evaluate.baseline import named_rows
    from lmforge.quickstart import pydoc_corpus
    from lmforge.tasks.classify import ClassifyConfig, ensemble_split_scores, table_baselines, training_texts

    table, out = Path(args.data), Path(args.out)
    options = ClassifyConfig(text_column=args.text_column, label_column=args.label_column,
                              tokenizer="wordpiece", vocab_size=args.vocab_size)
    common = dict(batch_size=args.batch_size, device=args.device, overwrite=args.overwrite, progress=False)
    t0 = time.perf_counter()
    times, results = {}, {}
    try:
        texts = training_texts(table, options)
        with tempfile.TemporaryDirectory() as tmp:
            own = Path(tmp) / "task_texts.txt"
            own.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
            ref = Path(tmp) / "pydoc.txt"
            ref.write_text(pydoc_corpus(), encoding="utf-8")
            print(f"[1/3] unlabelled text: {len(texts)} training texts of {table}, the Python reference, "
                  f"{len(args.corpus)} more file(s)")
            lmforge.prepare(lmforge.PrepareConfig(inputs=[str(own), str(ref), *args.corpus], out=str(out / "data"),
                                                  tokenizer="wordpiece", vocab_size=args.vocab_size,
                                                  overwrite=args.overwrite, progress=False))
        seed = {f.name: f.default for f in dataclasses.fields(lmforge.TrainConfig)}["seed"] if args.seed is None \
            else args.seed
        print(f"[2/3] masked-LM pretraining of {args.preset}: {args.pretrain_steps} steps")
        pre = lmforge.train(lmforge.TrainConfig(task="mlm", data=str(out / "data"), out=str(out / "encoder"),
                                                preset=args.preset, max_steps=args.pretrain_steps, seed=seed,
                                                eval_interval=max(1, args.pretrain_steps // 4), **common))
        times["pretrain"] = time.perf_counter() - t0
        members = [out / ("classifier" if k == 0 else f"classifier-{k + 1}") for k in range(max(1, args.members))]
        print(f"[3/3] fine-tuning into {len(members)} classifier(s): {args.finetune_steps} steps each")
        from lmforge.train.finetune import FINETUNE_DEFAULTS
        for k, member in enumerate(members):
            ft_cfg = lmforge.TrainConfig(**{**FINETUNE_DEFAULTS, "data": str(table), "out": str(member),
                                            "max_steps": args.finetune_steps, "seed": seed + k,
                                            "eval_interval": max(1, args.finetune_steps // 4), **common})
            ft = lmforge.finetune(lmforge.FinetuneConfig(str(out / "encoder"), task="classify"), ft_cfg, options)
            results["pretrain -> fine-tune (lmforge)" if k == 0 else f"pretrain -> fine-tune, seed {seed + k}"] = ft
        if len(members) > 1:
            scores = ensemble_split_scores(members, table, options)          # the test split, as the runs score it
            results[f"pretrain -> {len(members)} fine-tunes averaged (lmforge)"] = {
                "test_macro_f1": scores["macro_f1"], "test_accuracy": scores["accuracy"]}
        times["total"] = time.perf_counter() - t0
        if args.from_scratch:
            t1 = time.perf_counter()
            steps = args.pretrain_steps + args.finetune_steps * len(members)      # about the same CPU time
            results["from scratch, same shape and steps (lmforge)"] = lmforge.train(lmforge.TrainConfig(
                task="classify", data=str(table), out=str(out / "scratch"), preset=args.preset, max_steps=steps,
                eval_interval=max(1, steps // 4), task_options=options, **common))
            times["from_scratch"] = time.perf_counter() - t1
    except LmforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results.update(named_rows(table_baselines(table, options) or {}, "test"))   # none without scikit-learn
    print(f"\nmasked-LM validation perplexity {pre.get('val_ppl', float('nan')):.1f}; pretraining "
          f"{times['pretrain'] / 60:.1f} min, pretrain + fine-tune {times['total'] / 60:.1f} min")
    print(f"{'test split of ' + table.name:<48} {'macro-F1':>9} {'accuracy':>9}")
    for name, r in results.items():
        print(f"{name:<48} {r['test_macro_f1']:>9.4f} {r['test_accuracy']:>9.4f}")
    (out / "recipe_report.json").write_text(json.dumps({"results": {k: {m: r[m] for m in ("test_macro_f1",
                                                                                          "test_accuracy")}
                                                                    for k, r in results.items()},
                                                        "minutes": {k: v / 60 for k, v in times.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
