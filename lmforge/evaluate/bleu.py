"""Corpus BLEU and chrF with `sacrebleu` (the reference implementation, so scores compare
with published ones). BLEU needs words: for Chinese / Japanese / Korean references, whose
words are not separated by spaces, sacrebleu's "zh" tokenizer (one token per CJK character)
is picked automatically; chrF works on characters and needs no choice.

    >>> s = translation_scores(["the cat sat on the mat"], ["the cat sat on the mat"])
    >>> s["bleu"], s["chrf"]
    (100.0, 100.0)
"""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def bleu_tokenize_for(references: list[str]) -> str:
    """"zh" when at least a fifth of the reference characters are CJK, else sacrebleu's default "13a"."""
    text = "".join(references)
    chars = sum(1 for c in text if not c.isspace())
    return "zh" if chars and len(_CJK.findall(text)) / chars >= 0.2 else "13a"


def translation_scores(hypotheses: list[str], references: list[str]) -> dict[str, float | str]:
    """Corpus BLEU and chrF (0-100) of `hypotheses` against one reference each."""
    import sacrebleu
    assert len(hypotheses) == len(references), "one reference per hypothesis"
    tokenize = bleu_tokenize_for(references)
    bleu = sacrebleu.metrics.BLEU(tokenize=tokenize)
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "bleu_tokenize": tokenize,
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


def format_bleu(scores: dict) -> str:
    """"BLEU 13.43 (zh tokens), chrF 20.14"."""
    return f"BLEU {scores['bleu']:.2f} ({scores['bleu_tokenize']} tokens), chrF {scores['chrf']:.2f}"
