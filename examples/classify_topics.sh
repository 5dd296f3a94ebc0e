#!/usr/bin/env bash
# Train a topic classifier from scratch on a labelled table, then label a few texts.
#
#   examples/classify_topics.sh [TABLE] [OUT]
#
# TABLE: CSV / TSV / JSONL with a text and a label column (default: the 13k fortunes in 26
# categories of the shared data kit). Prints validation accuracy / macro-F1 while training and
# the test-split report at the end (OUT/classification_report.json, OUT/confusion_matrix.png).
# About 15 minutes on 2 CPU cores. Set TEXT_COLUMN / LABEL_COLUMN / STEPS to adapt it.
set -euo pipefail
DATA=${1:-/work/shared/data/fortunes_topics.tsv}
OUT=${2:-runs/fortune-topics}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

lmforge train --task classify --data "$DATA" \
  --text-column "${TEXT_COLUMN:-text}" --label-column "${LABEL_COLUMN:-label}" \
  --preset bert-tiny --tokenizer wordpiece --vocab-size 8000 --context-length 128 --dropout 0.1 \
  --batch-size 32 --warmup-steps 200 --max-steps "${STEPS:-2000}" --eval-interval 500 \
  --out "$OUT"

lmforge classify "$OUT" \
  "There is no such thing as a free lunch." \
  "The Perl interpreter will happily run your line noise." \
  "Beam me up, Scotty, there is no intelligent life down here." \
  "A lawyer is a man who helps you get what is coming to him." \
  --top-k 3
