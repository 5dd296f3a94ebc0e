"""`lmforge VERB ...`: a thin layer over the Python API. Each verb builds the same dataclass the
API takes (its fields are the flags), calls one function and prints the result.

    core.py          the verb registry, the parser (+ --config / --print-config run files), `main` and
                     its one-line errors
    training.py      quickstart, prepare, train, finetune, distill
    generation.py    generate, chat, serve
    inspection.py    eval, score, attention
    text_tasks.py    classify, translate, embed
    interop.py       import, export, card, quantize, merge-lora, presets
    watching.py      runs (a page of the training runs in a folder)
    auditing.py      audit memorization|canaries|membership|bias|overlap

Each group module registers its verbs when imported; `lmforge --help` lists them in
`core.HELP_ORDER`.
"""

from . import auditing, generation, inspection, interop, text_tasks, training, watching  # noqa: F401  (registers the verbs)
from .core import VERBS, build_parser, main

__all__ = ["VERBS", "build_parser", "main"]
