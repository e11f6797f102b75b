"""LoRA adapters through PEFT, with self-describing adapter files."""

from cosmos_predict2.lora.adapters import (
    DEFAULT_TARGET_MODULES,
    LoraConfigError,
    LoraSpec,
    adapter_checkpoint,
    add_lora,
    check_flags_match,
    is_adapter_checkpoint,
    load_adapter_weights,
    lora_state_dict,
    set_lora_scale,
    split_adapter_checkpoint,
)

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "LoraConfigError",
    "LoraSpec",
    "add_lora",
    "adapter_checkpoint",
    "check_flags_match",
    "is_adapter_checkpoint",
    "load_adapter_weights",
    "lora_state_dict",
    "set_lora_scale",
    "split_adapter_checkpoint",
]
