"""Decoding. Layers, top to bottom (a module imports only those below it):

    dispatch.py     generate (text), generate_ids (token ids): picks one of the three below
    decode.py       plain sampling / greedy      beam.py (beam_search)      speculative.py
    auto_compile.py whether plain decoding runs the compiled step (`--compile`, or by default on a CPU
                    once a model has decoded eagerly for 5 s)
    core.py         GenerationConfig (every decoding option: the CLI, the API and the server's one type),
                    Completion, prepare_prompts, prefill, decode_one_token, decoding_run
    sampling.py     logits -> tokens: penalties, filters, sampling
    text.py         a sequence's text as tokens arrive: incremental decoding, stop strings

`chat.py` (a conversation) and `seq2seq.py` (encoder-decoders) sit beside `dispatch.py`;
`summarize.py` (a summary with either family) above them.
"""

from .core import Completion, GenerationConfig, decode_one_token, prefill
from .dispatch import generate, generate_ids
from .sampling import apply_repetition_penalty, filter_top_k, filter_top_p, sample_next

__all__ = ["Completion", "GenerationConfig", "generate", "generate_ids", "prefill", "decode_one_token",
           "sample_next", "filter_top_k", "filter_top_p", "apply_repetition_penalty"]
