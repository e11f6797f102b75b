"""Activation offload: the inputs that activation checkpointing keeps per block live in host memory.

With checkpointing, what a block leaves on the GPU between its forward and its backward is its inputs (PyTorch's
non-reentrant checkpoint saves them through `ctx.save_for_backward`, i.e. through the saved-tensor hooks):
`x_B_T_S_D` is one [L, D] tensor per block, 0.8 GiB for 14B at 720p, 29 GiB over the 36 blocks. Wrapping each
block's checkpoint call in `ActivationOffload.block()` moves those tensors to pinned host memory on a side stream
during the forward and brings them back when the backward recomputes the block; the backward of block i also
starts copying block i-1's inputs back, so the copy overlaps block i's recompute and backward. The values are
the same bits: losses and gradients equal the non-offloaded run's exactly.

On a CPU "device" the copies are plain host copies (the logic runs, nothing is saved); on CUDA host memory is
page-locked at the exact size and reused from step to step (networks/host_memory.py).
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from cosmos_predict2.networks.host_memory import HostBufferPool

# Saved block inputs smaller than this stay where they are: the per-frame modulation [B, T, D] and the text
# embedding [B, 512, 1024] are small next to x [B, T*H*W, D], and each copy has a fixed cost.
MIN_OFFLOAD_BYTES = 1 << 20


def in_backward() -> bool:
    """True inside the autograd engine, e.g. in the backward's recompute of a checkpointed block (checkpoint itself
    tells its recomputation apart the same way)."""
    return torch._C._current_graph_task_id() != -1


def kept_outputs(storage: dict, wrapper: type) -> Iterator:
    """The `wrapper` (`_VersionWrapper`) leaves of selective checkpointing's storage, which maps each op to its
    calls' output trees: a list of them up to PyTorch 2.11, a {call index: tree} dict in 2.13."""
    for calls in storage.values():
        for tree in calls.values() if isinstance(calls, dict) else calls:
            yield from (leaf for leaf in tree_leaves(tree) if isinstance(leaf, wrapper))


class _Offloaded:
    """One saved tensor in host memory; `prefetched` is its device copy once a prefetch has started."""

    __slots__ = ("host", "device", "copied", "prefetched", "__weakref__")

    def __init__(self, host: torch.Tensor, device: torch.device, copied: torch.cuda.Event | None) -> None:
        self.host, self.device, self.copied = host, device, copied
        self.prefetched: tuple[torch.Tensor, torch.cuda.Event | None] | None = None


class ActivationOffload:
    """Saved-tensor hooks that keep large saved tensors in host memory, grouped by block for prefetching."""

    def __init__(self, min_bytes: int = MIN_OFFLOAD_BYTES, prefetch: bool = True) -> None:
        self.min_bytes, self.prefetch = min_bytes, prefetch
        self._streams: dict[torch.device, torch.cuda.Stream] = {}
        self._pools: dict[bool, HostBufferPool] = {}  # page-locked (CUDA tensors) or not (a CPU "device")
        self._groups: dict[int, list[weakref.ref[_Offloaded]]] = {}
        self._group_ids = itertools.count()
        self._current_group: int | None = None
        # offloaded: saved block inputs and kept outputs sent to the host; prefetched / loaded_on_demand: how the
        # block inputs came back; kept_prefetched: kept outputs already on their way back at their recompute
        self.stats = {"offloaded": 0, "offloaded_bytes": 0, "prefetched": 0, "loaded_on_demand": 0,
                      "kept_prefetched": 0}  # fmt: skip

    @contextlib.contextmanager
    def block(self) -> Iterator[None]:
        """Offload what autograd saves inside this context: one block's checkpoint call, whose tensor arguments
        are saved through these hooks (a tuple argument, like the RoPE tables shared by every block, is not)."""
        self._drop_dead_groups()
        group = next(self._group_ids)
        self._groups[group] = []
        self._current_group = group  # selective checkpointing's kept outputs join this block's group
        try:
            with torch.autograd.graph.saved_tensors_hooks(lambda t: self._pack(t, group),
                                                          lambda h: self._unpack(h, group)):  # fmt: skip
                yield
        finally:
            self._current_group = None

    # --- hooks (their copies must not be recorded by autograd: no_grad) ------------------------------------

    def _worth_offloading(self, t: torch.Tensor) -> bool:
        return (not isinstance(t, nn.Parameter) and t.layout == torch.strided and t.device.type != "meta"
                and t.numel() * t.element_size() >= self.min_bytes)  # fmt: skip

    @torch.no_grad()
    def _pack(self, t: torch.Tensor, group: int) -> torch.Tensor | _Offloaded:
        if not self._worth_offloading(t):
            return t
        handle = self._to_host(t)
        self._groups[group].append(weakref.ref(handle))
        return handle

    @torch.no_grad()
    def _unpack(self, handle: torch.Tensor | _Offloaded, group: int) -> torch.Tensor:
        if isinstance(handle, torch.Tensor):
            return handle
        if handle.prefetched is None:
            self.stats["loaded_on_demand"] += 1
            self._start_load(handle)
        else:
            self.stats["prefetched"] += 1
        if self.prefetch:  # the backward runs the blocks in reverse: the previous block's inputs come next
            for ref in self._groups.get(group - 1, ()):
                other = ref()
                if other is not None and other.prefetched is None:
                    self._start_load(other)
        return self._finish_load(handle)

    # --- selective checkpointing's kept outputs ------------------------------------------------------------

    def selective_contexts(self, make_contexts: Callable[[], tuple]) -> tuple:
        """Selective checkpointing's (forward, recompute) contexts, with the outputs it keeps (self-attention's)
        in host memory from the end of the block's forward to its recompute; they are prefetched with the block's
        inputs (while the next block runs its backward).

        Relies on how PyTorch stores them: the forward mode's `storage` maps each op to its calls' trees of
        `_VersionWrapper`s, read back by the recompute mode (torch.utils.checkpoint; see `kept_outputs`); without
        that class the outputs simply stay on the GPU. tests/test_memory_modes.py fails if the layout changes."""
        caching, cached = make_contexts()
        try:
            from torch.utils.checkpoint import _VersionWrapper
        except ImportError:
            return caching, cached
        moved: list = []
        group = self._groups.get(self._current_group)  # prefetched with the block's inputs (see _unpack)

        @contextlib.contextmanager
        def forward() -> Iterator[None]:
            with caching:
                yield
            with torch.no_grad():
                for leaf in kept_outputs(caching.storage, _VersionWrapper):
                    if isinstance(leaf.val, torch.Tensor) and self._worth_offloading(leaf.val):
                        leaf.val = self._to_host(leaf.val)
                        moved.append(leaf)
                        if group is not None:
                            group.append(weakref.ref(leaf.val))

        @contextlib.contextmanager
        def recompute() -> Iterator[None]:
            with torch.no_grad():
                for leaf in moved:
                    if leaf.val.prefetched is None:
                        self._start_load(leaf.val)
                    else:
                        self.stats["kept_prefetched"] += 1
                    leaf.val = self._finish_load(leaf.val)
                    leaf.version = leaf.val._version  # the copy is a new tensor: its own version counter
            moved.clear()
            with cached:
                yield

        return forward(), recompute()

    # --- copies --------------------------------------------------------------------------------------------

    def _to_host(self, t: torch.Tensor) -> _Offloaded:
        cuda = t.device.type == "cuda"
        # Same strides as t: the copy back must be indistinguishable (a transposed attention output reshaped after
        # the recompute must copy exactly when the original did). Expanded tensors (stride 0) become contiguous.
        strides = t.stride() if 0 not in t.stride() else torch.empty(t.shape, device="meta").stride()
        host = self._pool(cuda).empty_strided(t.shape, strides, t.dtype)
        copied = None
        if cuda:
            stream = self._stream(t.device)
            stream.wait_stream(torch.cuda.current_stream(t.device))  # t is produced on the compute stream
            with torch.cuda.stream(stream):
                host.copy_(t, non_blocking=True)
                copied = torch.cuda.Event()
                copied.record(stream)
            t.record_stream(stream)  # its memory is not reused until the copy has read it
        else:
            host.copy_(t)
        self.stats["offloaded"] += 1
        self.stats["offloaded_bytes"] += t.numel() * t.element_size()
        return _Offloaded(host, t.device, copied)

    def _finish_load(self, handle: _Offloaded) -> torch.Tensor:
        """The loaded device tensor, usable on the compute stream."""
        t, ready = handle.prefetched
        handle.prefetched = None
        if ready is not None:
            current = torch.cuda.current_stream(t.device)
            current.wait_event(ready)
            t.record_stream(current)  # allocated on the side stream, used and freed on the compute stream
        return t

    def _start_load(self, handle: _Offloaded) -> None:
        if handle.device.type != "cuda":
            handle.prefetched = (handle.host.clone(), None)  # a CPU device: a plain copy runs the same logic
            return
        stream = self._stream(handle.device)
        with torch.cuda.stream(stream):  # in stream order after the device-to-host copy
            t = handle.host.to(handle.device, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(stream)
        handle.prefetched = (t, ready)

    def _pool(self, pin: bool) -> HostBufferPool:
        if pin not in self._pools:
            self._pools[pin] = HostBufferPool(pin)
        return self._pools[pin]

    def host_bytes(self) -> int:
        """Host memory this offload has allocated (in use or waiting for reuse)."""
        return sum(pool.allocated_bytes for pool in self._pools.values())

    def _stream(self, device: torch.device) -> torch.cuda.Stream:
        if device not in self._streams:
            self._streams[device] = torch.cuda.Stream(device)
        return self._streams[device]

    def _drop_dead_groups(self) -> None:
        """Groups whose tensors were all unpacked or freed (a forward without backward) are forgotten."""
        for group in [g for g, refs in self._groups.items() if all(r() is None for r in refs)]:
            del self._groups[group]


__all__ = ["MIN_OFFLOAD_BYTES", "ActivationOffload", "in_backward"]
