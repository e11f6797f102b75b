"""fp8 storage of frozen base weights: each frozen Linear weight of the DiT blocks is kept as float8_e5m2 times one
per-tensor scale (half of bf16's bytes: 14B's blocks 26.4 -> 13.2 GiB) and upcast to the compute dtype just for
its layer's call.

This changes the base the adapters train on: e5m2 keeps 2 mantissa bits, a relative rounding error of up to 2^-3
per weight (docs/memory.md gives the output difference measured on the tiny network). It is opt-in
(`model.config.base_weight_storage="fp8_e5m2"`) and LoRA-only; the adapter file still names the bf16 base.

Like weight streaming it relies on checkpointed blocks: a layer's upcast weight exists only during its call, and
only checkpointing's recompute (whose saved tensors alias the upcast storage) brings it back for the backward.
"""

from __future__ import annotations

import torch
from torch import nn

FP8_FORMATS = {"fp8_e5m2": torch.float8_e5m2, "fp8_e4m3": torch.float8_e4m3fn}


class _Fp8Weight:
    """Pre/post hooks around one Linear's call: upcast the stored fp8 weight for the call, put the fp8 storage back
    after. For a LoRA layer's base Linear the hooks sit on the LoRA layer, so that its whole call (the fused base +
    adapter function of lora/adapters.py) sees the upcast weight."""

    def __init__(self, linear: nn.Linear, fmt: torch.dtype) -> None:
        self.linear = linear
        weight = linear.weight.detach()
        self.compute_dtype = weight.dtype
        amax = weight.abs().amax().float().clamp(min=1e-12)
        self.scale = float(amax) / torch.finfo(fmt).max
        linear.weight.data = (weight.float() / self.scale).to(fmt)
        linear.fp8_scale = self.scale  # weight = fp8 * fp8_scale (for inspection and tests)
        self.stored: torch.Tensor | None = None

    def before(self, _module: nn.Module, _args) -> None:
        with torch.no_grad():
            self.stored = self.linear.weight.data  # the fp8 tensor (on whatever device streaming put it)
            self.linear.weight.data = self.stored.to(self.compute_dtype) * self.scale

    def after(self, _module: nn.Module, _args, _output) -> None:
        self.linear.weight.data, self.stored = self.stored, None


def store_frozen_weights_fp8(net: nn.Module, storage: str = "fp8_e5m2") -> int:
    """Convert the frozen Linear weights of `net.blocks` to fp8 storage; returns how many. Call after LoRA is
    injected (PEFT's base layers are the frozen ones) and before weight streaming."""
    if getattr(net, "activation_checkpointing", "full") == "none":
        raise ValueError("fp8 weight storage needs checkpointed blocks (activation_checkpointing other than 'none')")
    fmt = FP8_FORMATS[storage]
    count = 0
    for block in net.blocks:
        lora_layer_of = {id(m.base_layer): m for m in block.modules() if isinstance(getattr(m, "base_layer", None),
                                                                                    nn.Linear)}  # fmt: skip
        for module in block.modules():
            if type(module) is nn.Linear and not module.weight.requires_grad and module.weight.dtype != fmt:
                hooks = _Fp8Weight(module, fmt)
                owner = lora_layer_of.get(id(module), module)
                owner.register_forward_pre_hook(hooks.before)
                owner.register_forward_hook(hooks.after)
                count += 1
    return count


__all__ = ["FP8_FORMATS", "store_frozen_weights_fp8"]
