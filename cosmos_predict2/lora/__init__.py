"""LoRA: the spec (PEFT-free), the adapter files (PEFT-free) and the PEFT-backed network capability.

Importing this package imports neither PEFT nor the network: the PEFT-backed names (`add_lora`, ...) are loaded
on first use, so configs and `--dryrun` checks stay light.
"""

from __future__ import annotations

import importlib
from typing import Any

from cosmos_predict2.lora.files import (
    AdapterFile,
    adapter_checkpoint,
    file_sha256,
    is_adapter_checkpoint,
    read_adapter_file,
    split_adapter_checkpoint,
)
from cosmos_predict2.lora.spec import DEFAULT_TARGET_MODULES, VALID_TARGETS, LoraConfigError, LoraSpec

_PEFT_BACKED = ("activate_adapters", "add_lora", "has_lora", "load_adapter_weights", "lora_state_dict",
                "matching_modules", "merge_lora_", "set_lora_scale")  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _PEFT_BACKED:
        return getattr(importlib.import_module("cosmos_predict2.lora.adapters"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_TARGET_MODULES",
    "VALID_TARGETS",
    "AdapterFile",
    "LoraConfigError",
    "LoraSpec",
    "adapter_checkpoint",
    "file_sha256",
    "is_adapter_checkpoint",
    "read_adapter_file",
    "split_adapter_checkpoint",
    *_PEFT_BACKED,
]
