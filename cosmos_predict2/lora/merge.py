"""Fold adapters into a base checkpoint: a plain `net.*` file in the released layout (bf16), loadable without
`--use_lora`. Streamed per tensor: the base is memory-mapped (io.safe_load) and each adapted weight is merged on
its own, so memory holds at most the merged output (one copy), never base + output as two loaded copies.

    W' = round_bf16( W + sum_i  s_i * (alpha_i / r_i) * B_i @ A_i )     (the sum in fp32, one rounding)

which is what PEFT's merge does at inference (`lora/adapters.merge_lora_`), layer by layer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cosmos_predict2.lora.files import NET, NET_EMA, AdapterFile
from cosmos_predict2.lora.formats import module_of
from cosmos_predict2.lora.spec import LoraConfigError


@dataclass
class ScaledAdapter:
    adapter: AdapterFile
    scale: float
    source: str


def check_same_base(adapters: Sequence[ScaledAdapter]) -> None:
    """Adapters trained on different base models (recorded model size, net config or sha256 differ) cannot be
    combined: refuse, naming both files."""
    for field in ("model_size", "sha256", "net_config"):
        seen = [(a.adapter.base.get(field), a.source) for a in adapters if a.adapter.base.get(field)]
        for value, source in seen[1:]:
            if value != seen[0][0]:
                raise LoraConfigError(f"adapters for different base models: {seen[0][1]} records {field} "
                                      f"{_short(seen[0][0])} but {source} records {_short(value)}; combine only "
                                      "adapters trained on the same base")  # fmt: skip


def _short(value: object) -> str:
    text = str(value)
    return text[:12] + "..." if len(text) > 16 else text


def lora_deltas(adapters: Sequence[ScaledAdapter], use_ema: bool = True) -> dict[str, list[tuple]]:
    """{module: [(B, A, factor)]} with factor = scale * alpha / rank, per adapter that adapts the module."""
    out: dict[str, list[tuple]] = {}
    for a in adapters:
        weights = a.adapter.inference_weights(use_ema)
        factor = a.scale * a.adapter.spec.alpha / a.adapter.spec.rank
        for key in weights:
            if ".lora_A." in key:
                module = module_of(key)
                out.setdefault(module, []).append((weights[key.replace(".lora_A.", ".lora_B.")], weights[key], factor))
    return out


def merge_weight(weight: torch.Tensor, deltas: list[tuple], dtype: torch.dtype) -> torch.Tensor:
    merged = weight.float()  # a new fp32 tensor: the mmapped base is never written
    for b, a, factor in deltas:
        merged.addmm_(b.float(), a.float(), alpha=factor)
    return merged.to(dtype)


def merge_to_file(adapters: Sequence[ScaledAdapter], base_path: str | os.PathLike, out: str | os.PathLike,
                  dtype: torch.dtype = torch.bfloat16, use_ema: bool = True) -> Path:
    """Write `out`: every `net.*` tensor of the base (floating ones cast to `dtype`), adapted weights merged."""
    from cosmos_predict2.io import atomic_torch_save, safe_load

    check_same_base(adapters)
    state = safe_load(base_path, what="base DiT")
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or any(".lora_" in k for k in state if isinstance(k, str)):
        raise LoraConfigError(f"--base {base_path} is not a plain base checkpoint (net.* tensors without adapters)")
    prefix = NET if any(k.startswith(NET) for k in state) else NET_EMA  # EMA-only files: their net_ema.* weights
    deltas = lora_deltas(adapters, use_ema)
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = NET + key[len(prefix):]
        module, _, leaf = key[len(prefix):].rpartition(".")
        if leaf == "weight" and module in deltas:
            expected = (deltas[module][0][0].shape[0], deltas[module][0][1].shape[1])
            if tuple(value.shape) != expected:
                raise LoraConfigError(f"--base {base_path}: {module}.weight is {tuple(value.shape)} but the adapter "
                                      f"expects {expected}: a different base model")  # fmt: skip
            merged[name] = merge_weight(value, deltas.pop(module), dtype)
        else:
            merged[name] = value.to(dtype) if value.is_floating_point() else value
    if deltas:
        raise LoraConfigError(f"--base {base_path} has no layer {sorted(deltas)[0]} that the adapter adapts: "
                              "a different base model")  # fmt: skip
    return atomic_torch_save(merged, out)


__all__ = ["ScaledAdapter", "check_same_base", "lora_deltas", "merge_to_file", "merge_weight"]
