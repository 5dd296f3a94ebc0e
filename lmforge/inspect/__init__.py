"""The glass box: see why a model answers, on every family lmforge builds or imports.

    hooks.py        the named hook points (TransformerLens' names), `recording` and `editing`
                    contexts that set the model's `hook` attributes only while they are open
    prompts.py      a text in each family's layout, one forward pass, `trace` (the activations)
    lens.py         the logit lens: every layer's residual stream read through the final norm and head
    dla.py          direct logit attribution: each head's / MLP's share of a logit (difference)
    patching.py     activation patching: clean -> corrupted per (layer, position) and per (layer, head)
    attribution.py  input attribution: gradient x input and integrated gradients over the embeddings
    heads.py        attention maps; previous-token, induction and entropy scores per head

Every tool takes a loaded model (`lmforge.Model`: `module`, `config`, `tokenizer`) and returns a
dataclass of tensors and token strings with `to_dict()` (JSON), `table()` (text) and
`plot(PNG)`; `lmforge.Model` has a method for each, and `lmforge inspect TOOL` prints them.
"""

from .attribution import AttributeConfig, InputAttribution, attribute
from .dla import DlaConfig, LogitAttribution, dla
from .heads import HeadScores, HeadScoresConfig, attention_maps, check_kind, head_scores
from .hooks import editing, hook_names, recording
from .lens import LensConfig, LogitLens, logit_lens
from .patching import PatchConfig, Patching, patch
from .prompts import Trace, trace

__all__ = ["AttributeConfig", "InputAttribution", "attribute", "DlaConfig", "LogitAttribution", "dla", "HeadScores",
           "HeadScoresConfig", "attention_maps", "check_kind", "head_scores", "editing", "hook_names", "recording",
           "LensConfig", "LogitLens", "logit_lens", "PatchConfig", "Patching", "patch", "Trace", "trace"]
