"""Adapting a trained model cheaply with LoRA, in one home: the adapter modules (`lora.py`:
LoRAConfig, LoRALinear, apply_lora, merge_lora) and a LoRA run's directory (`runs.py`: its
adapter_config.json, reading it back onto its base, merge_adapter, and loading any model
directory with a LoRA run merged into its base)."""

from .lora import LoRAConfig, apply_lora, merge_lora
from .runs import merge_adapter

__all__ = ["LoRAConfig", "apply_lora", "merge_lora", "merge_adapter"]
