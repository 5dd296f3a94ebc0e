"""Weight quantization (int8 per channel, int4 grouped) by swapping Linear modules: the
`quantize` verb and its report (`model.py`); the int8 / int4 layers themselves are
`lmforge.model.quantized`'s, re-exported here as the quantization API."""

from ..model.quantized import Int4Linear, Int8Linear, dequantize_int4, quantize_int4, quantize_int8
from .model import QuantizeConfig, format_report, quantization_report, quantize, quantize_model

__all__ = ["Int8Linear", "Int4Linear", "quantize_int8", "quantize_int4", "dequantize_int4", "quantize_model",
           "QuantizeConfig", "quantize", "quantization_report", "format_report"]
