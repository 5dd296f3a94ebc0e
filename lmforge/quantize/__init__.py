"""Weight-only quantization (int8 per channel, int4 grouped) by swapping Linear modules."""

from ..model.quantized import Int4Linear, Int8Linear, dequantize_int4, quantize_int4, quantize_int8
from ..model.quantized import swap_in_quantized
from .model import QuantizeArgs, format_report, quantization_report, quantize, quantize_model

__all__ = ["Int8Linear", "Int4Linear", "quantize_int8", "quantize_int4", "dequantize_int4", "quantize_model",
           "swap_in_quantized", "QuantizeArgs", "quantize", "quantization_report", "format_report"]
