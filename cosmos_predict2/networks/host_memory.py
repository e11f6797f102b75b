"""Page-locked host memory of the size asked for: where the low-memory modes keep weights and activations.

`pin_memory=True` goes through PyTorch's caching host allocator, which rounds every block up to a power of two and
keeps it: a 0.8 GiB block input (14B, 720p) takes 1 GiB, a 210 MB MLP weight 256 MB, and the 26.6 GiB of 14B block
weights ~33 GiB. The low-memory modes hold tens of GiB on the host, so they allocate ordinary host tensors and
page-lock them with cudaHostRegister: the same asynchronous copies at the exact size (in 4 KiB pages).

On a CPU "device" nothing is page-locked (there is no copy engine to serve): the same buffers and reuse, pageable.
"""

from __future__ import annotations

import collections
import math
import weakref
from collections.abc import Sequence

import torch

ALIGN_BYTES = 64  # views into one buffer start at cache-line (and any dtype's) alignment


def storage_bytes(shape: Sequence[int], strides: Sequence[int], dtype: torch.dtype) -> int:
    """Bytes a tensor of this shape and these strides spans (its storage from offset 0)."""
    if 0 in shape:
        return 0
    return (1 + sum((n - 1) * s for n, s in zip(shape, strides))) * dtype.itemsize


def page_lock(buffer: torch.Tensor) -> None:
    """Page-lock a contiguous host tensor's memory for asynchronous copies; unlocked when the tensor is freed."""
    cudart = torch.cuda.cudart()
    nbytes = buffer.numel() * buffer.element_size()
    error = cudart.cudaHostRegister(buffer.data_ptr(), nbytes, 0)
    if error != cudart.cudaError.success:
        raise RuntimeError(f"cudaHostRegister of {nbytes / 2**30:.2f} GiB of host memory failed "
                           f"({cudart.cudaGetErrorString(error)}): the machine lacks free or lockable host memory "
                           "(see `ulimit -l`); memory_mode=default needs none")  # fmt: skip
    # not at interpreter exit: the driver unlocks a process's memory when it ends
    weakref.finalize(buffer, cudart.cudaHostUnregister, buffer.data_ptr()).atexit = False


def host_buffer(nbytes: int, pin: bool) -> torch.Tensor:
    """An uninitialised uint8 host tensor of `nbytes`, page-locked when `pin`."""
    buffer = torch.empty(nbytes, dtype=torch.uint8)
    if pin and nbytes:
        page_lock(buffer)
    return buffer


def view_as(buffer: torch.Tensor, offset: int, shape: Sequence[int], strides: Sequence[int],
            dtype: torch.dtype) -> torch.Tensor:  # fmt: skip
    """A tensor of `shape`, `strides` and `dtype` over `buffer`'s bytes from `offset`."""
    nbytes = storage_bytes(shape, strides, dtype)
    flat = buffer[offset:offset + nbytes].view(dtype)
    return flat.as_strided(tuple(shape), tuple(strides))


def move_into_one_buffer(params: Sequence[torch.Tensor], pin: bool) -> torch.Tensor:
    """Move the data of `params` (parameters on any device) into one host buffer, contiguous, and page-lock it after
    the copies: each old copy is released as soon as its new one is made, so the host holds one copy plus one
    tensor, never two. Returns the buffer (the parameters' data are views into it)."""
    offsets, total = [], 0
    for p in params:
        offsets.append(total)
        total += math.ceil(p.numel() * p.element_size() / ALIGN_BYTES) * ALIGN_BYTES
    buffer = torch.empty(total, dtype=torch.uint8)  # untouched pages: committed copy by copy
    with torch.no_grad():
        for p, offset in zip(params, offsets):
            view = view_as(buffer, offset, p.shape, torch.empty(p.shape, device="meta").stride(), p.dtype)
            view.copy_(p.data)
            p.data = view
    if pin and total:
        page_lock(buffer)
    return buffer


class HostBufferPool:
    """Host tensors reused by size: a training step offloads the same sizes as the step before, so after the first
    step no memory is allocated or page-locked. A buffer goes back to the pool when the tensor handed out is freed.

    Reuse is safe without events because every copy into and out of these buffers is issued on one side stream
    per device (activation offload's): a later device-to-host copy into a reused buffer runs after the
    host-to-device copy that last read it."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self._free: dict[int, list[torch.Tensor]] = collections.defaultdict(list)
        self.allocated_bytes = 0

    def empty_strided(self, shape: Sequence[int], strides: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        nbytes = storage_bytes(shape, strides, dtype)
        free = self._free[nbytes]
        if free:
            buffer = free.pop()
        else:
            buffer = host_buffer(nbytes, self.pin)
            self.allocated_bytes += nbytes
        tensor = view_as(buffer, 0, shape, strides, dtype)
        weakref.finalize(tensor, free.append, buffer).atexit = False
        return tensor

    def cached_bytes(self) -> int:
        """Bytes in buffers waiting for reuse."""
        return sum(len(buffers) * nbytes for nbytes, buffers in self._free.items())


__all__ = ["HostBufferPool", "host_buffer", "move_into_one_buffer", "page_lock", "storage_bytes", "view_as"]
