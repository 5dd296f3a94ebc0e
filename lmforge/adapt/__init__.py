"""Adapting a trained model cheaply: LoRA adapters (`lora.py`)."""

from .lora import (ADAPTER_CONFIG, ADAPTER_FILE, LoRAConfig, LoRALinear, apply_lora, is_adapter_dir,
                   load_lora_model, merge_adapter, merge_lora, trainable_state_dict)

__all__ = ["LoRAConfig", "LoRALinear", "apply_lora", "merge_lora", "trainable_state_dict", "load_lora_model",
           "merge_adapter", "is_adapter_dir", "ADAPTER_FILE", "ADAPTER_CONFIG"]
