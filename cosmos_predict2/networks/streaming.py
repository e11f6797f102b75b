"""Frozen-weight streaming: the frozen base weights of the DiT blocks live in pinned host memory and are copied to
the GPU one block (or `ahead` blocks) before use, in the forward and again in the backward's recompute.

Applied from outside the network, as forward pre-hooks on the blocks (`apply_weight_streaming`). Only parameters
with requires_grad=False move (with PEFT, a `lora.Linear`'s `base_layer.weight`); LoRA adapters, the embeddings
and the final layer stay on the GPU. Copies go host-to-device only: a frozen weight never changes, so dropping the
device copy is all "freeing" takes. 14B: 26.6 GiB of bf16 weights leave the GPU; ~0.73 GiB per block stays, two
blocks at a time with ahead=1.

Why a window rather than a post-forward hook: under activation checkpointing the backward recomputes block i's
forward (its pre-hook runs again) and then runs block i's backward, which still needs the weights after the
recompute's forward has returned. Block i's backward is complete when block i-1's recompute starts (its input
gradient is what block i-1's backward needs), so each pre-hook keeps the block it runs and the next `ahead` in the
current direction (increasing in the forward, decreasing in the backward) and drops the others. A block's saved
tensors of the un-checkpointed kind would hold a dropped weight, so streaming needs every block checkpointed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes

from cosmos_predict2.networks.host_memory import move_into_one_buffer
from cosmos_predict2.networks.offload import in_backward


class WeightStreamer:
    """Which blocks' frozen weights are on the device, and the copies that put them there."""

    def __init__(self, blocks: Sequence[nn.Module], device: torch.device, ahead: int = 1) -> None:
        self.blocks, self.device, self.ahead = list(blocks), torch.device(device), ahead
        self.frozen: list[list[nn.Parameter]] = [
            [p for p in block.parameters() if not p.requires_grad] for block in self.blocks
        ]
        self.host: list[list[torch.Tensor]] = [[] for _ in self.blocks]
        self.ready: dict[int, torch.cuda.Event | None] = {}  # blocks on the device (or being copied there)
        self.trace: list[tuple[str, int]] | None = None  # set to [] to record ("load"/"drop", block) events
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._buffer: torch.Tensor | None = None  # the host copies of all frozen weights, one allocation

    @torch.no_grad()
    def offload(self) -> None:
        """Move every block's frozen weights into one page-locked host buffer (networks/host_memory.py: the exact
        size, where `pin_memory=True` would round each weight up to a power of two): the "offloaded" state."""
        params = [p for block in self.frozen for p in block]
        self._buffer = move_into_one_buffer(params, pin=self.device.type == "cuda")
        self.host = [[p.data for p in block] for block in self.frozen]
        self.ready.clear()

    def is_offloaded(self, index: int) -> bool:
        return all(p.data_ptr() == h.data_ptr() for p, h in zip(self.frozen[index], self.host[index]))

    def before_block(self, index: int) -> None:
        """The pre-hook of block `index`: keep it and the next `ahead` blocks, drop the rest, wait for its copy.
        Runs outside selective checkpointing's dispatch mode, which would count the copies as the block's ops
        (they differ between the forward and the recompute)."""
        with _disable_current_modes(), torch.no_grad():
            self._before_block(index)

    def _before_block(self, index: int) -> None:
        step = -1 if in_backward() else 1
        wanted = [j for j in range(index, index + step * (self.ahead + 1), step) if 0 <= j < len(self.blocks)]
        for j in [j for j in self.ready if j not in wanted]:
            self._drop(j)
        for j in wanted:
            if j not in self.ready:
                self._load(j)
        ready = self.ready[index]
        if ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)
            for p in self.frozen[index]:
                p.data.record_stream(current)  # copied on the side stream, read on the compute stream

    def _load(self, index: int) -> None:
        if self.trace is not None:
            self.trace.append(("load", index))
        if self._stream is None:  # a CPU device: a plain copy, so that the swapping logic runs the same
            for p, host in zip(self.frozen[index], self.host[index]):
                p.data = host.clone()
            self.ready[index] = None
            return
        with torch.cuda.stream(self._stream):
            for p, host in zip(self.frozen[index], self.host[index]):
                p.data = host.to(self.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(self._stream)
        self.ready[index] = ready

    def _drop(self, index: int) -> None:
        if self.trace is not None:
            self.trace.append(("drop", index))
        for p, host in zip(self.frozen[index], self.host[index]):
            p.data = host
        del self.ready[index]


def _move_rest_(net: nn.Module, streamed: set[int], device: torch.device) -> None:
    """Everything but the streamed weights goes to the device (the net may come from a host-side load)."""
    for p in net.parameters():
        if id(p) not in streamed:
            p.data = p.data.to(device)
    for module in net.modules():
        for name, buf in module._buffers.items():
            if buf is not None:
                module._buffers[name] = buf.to(device)


def apply_weight_streaming(net: nn.Module, device: torch.device | str, ahead: int = 1) -> WeightStreamer:
    """Stream the frozen weights of `net.blocks` from host memory (call after LoRA is injected and frozen).
    Sets `net.weight_streamer`; returns it."""
    if getattr(net, "weight_streamer", None) is not None:
        raise ValueError("weight streaming is already applied to this network")
    if getattr(net, "activation_checkpointing", "full") == "none":
        raise ValueError("weight streaming needs checkpointed blocks: activation_checkpointing 'full', 'selective' or "
                         "'nested' (see the module doc)")
    device = torch.device(device)
    streamer = WeightStreamer(net.blocks, device, ahead)
    _move_rest_(net, {id(p) for params in streamer.frozen for p in params}, device)
    streamer.offload()
    for i, block in enumerate(streamer.blocks):
        block.register_forward_pre_hook(lambda _module, _args, i=i: streamer.before_block(i))
    net.weight_streamer = streamer
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the weights that left the device give their memory back
    return streamer


__all__ = ["WeightStreamer", "apply_weight_streaming"]
