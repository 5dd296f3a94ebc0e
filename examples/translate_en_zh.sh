#!/usr/bin/env bash
# Train an encoder-decoder translator from scratch on a table of sentence pairs, then
# translate a few sentences with beam search.
#
#   examples/translate_en_zh.sh [PAIRS] [OUT]
#
# PAIRS: CSV / TSV / JSONL with a source and a target column (default: the 2.7k English ->
# Chinese paragraph pairs of the Debian Reference in the shared data kit). Logs validation
# BLEU / chrF while training and writes the test-split report (beam search) to
# OUT/translation_report.json. With the seq2seq defaults (Muon, batch 32, docs/finetuning.md, "Defaults") about
# 9 minutes on 2 CPU cores. Set SRC / TGT / STEPS to adapt.
set -euo pipefail
DATA=${1:-/work/shared/data/en_zh_pairs.tsv}
OUT=${2:-runs/en-zh}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

lmforge train --task seq2seq --data "$DATA" \
  --source-column "${SRC:-en}" --target-column "${TGT:-zh}" \
  --preset seq2seq-mini --tokenizer bpe --vocab-size 4000 --context-length 128 \
  --max-steps "${STEPS:-450}" --eval-interval 150 \
  --label-smoothing 0.1 --eval-translations 64 --test-beams 4 \
  --out "$OUT"

lmforge translate "$OUT" \
  "Table of Contents" \
  "You must learn to take advantage of the power of these features." \
  "This chapter describes the basic system administration tools." \
  --num-beams 4
