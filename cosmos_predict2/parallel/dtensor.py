"""DTensor helpers: the one place that knows FSDP2 parameters and optimizer state are DTensor shards.

Checkpoints hold whole tensors; sharded runs gather on save (only the writing rank keeps them) and re-shard on
load, one tensor at a time. Every rank must call these in the same order where they communicate (`full_tensor`
all-gathers, `distribute_tensor` scatters). Files are memory-mapped on load, so the ranks of one node share one
copy in the page cache instead of holding one each.
"""

from __future__ import annotations

import torch
from torch import nn


def is_dtensor(t: torch.Tensor) -> bool:
    return hasattr(t, "device_mesh") and hasattr(t, "full_tensor")


def global_value(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor where it lives (e.g. a gradient norm, which FSDP2 computes as a DTensor)."""
    return t.full_tensor() if is_dtensor(t) else t


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor, detached, on the CPU (collective for DTensors)."""
    return (t.full_tensor() if is_dtensor(t) else t).detach().cpu()


def full_state(state: dict[str, torch.Tensor], keep: bool = True) -> dict[str, torch.Tensor]:
    """Whole CPU tensors of a (possibly sharded) state dict, gathered one tensor at a time; with keep=False
    (the ranks that do not write) each is dropped once gathered, so only the writer holds a full copy."""
    out = {}
    for k, v in state.items():
        t = full_tensor(v)
        if keep:
            out[k] = t
    return out


def like(value: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """A whole tensor from a file in the layout, dtype and device of the tensor it replaces (a DTensor shard is
    cut from it)."""
    if is_dtensor(current):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(value.to(current.device, current.dtype), current.device_mesh, current.placements)
    return value.to(current.device, current.dtype)


def is_sharded(net: nn.Module) -> bool:
    return any(is_dtensor(p) for p in net.parameters())


__all__ = ["full_state", "full_tensor", "global_value", "is_dtensor", "is_sharded", "like"]
