"""Decoding: sampling filters and the prefill / decode-one-token loop over the KV cache."""

from .decode import Completion, GenerationConfig, decode_one_token, generate, generate_ids, prefill
from .sampling import apply_repetition_penalty, filter_top_k, filter_top_p, sample_next

__all__ = ["Completion", "GenerationConfig", "generate", "generate_ids", "prefill", "decode_one_token",
           "sample_next", "filter_top_k", "filter_top_p", "apply_repetition_penalty"]
