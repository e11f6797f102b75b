"""Processes, devices and parallelism (docs/reference.md §10), applied to a plain network from outside.

`init_distributed()` is the one process setup for training, inference, T5 and the VAE: one process gets rank 0 of
1 and its device; under `torchrun` it joins the process group (NCCL on GPUs, gloo on CPUs). `parallelize_net()`
plugs context parallelism into the network's two seams (`frame_split`, `attention_fn`: the network itself knows no
process group) over groups of consecutive ranks, then shards the trainable network with FSDP2 (`fully_shard` per
block, mesh (replicate, shard)).
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class ProcessInfo:
    """This process's place in the job (one process: rank 0 of 1) and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_process_group: bool = False  # init_distributed joined it here, so shutdown_distributed leaves it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The one device resolver. None / "auto": this process's GPU (LOCAL_RANK) when CUDA is available, else the
    CPU; "cuda" means this process's GPU; anything else as given."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None or str(device) == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank)
    return device


def init_distributed(device: str | torch.device | None = None) -> ProcessInfo:
    """Join the torchrun process group when there is one (idempotent) and pick this process's device.

    The process group follows the device: NCCL for GPUs, gloo for CPUs, so `--device cpu` under torchrun also
    works on a machine that has GPUs. One process (no WORLD_SIZE) needs no process group.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved.index if resolved.index is not None else local_rank)
    owns = world > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    rank = dist.get_rank() if world > 1 and dist.is_initialized() else 0
    return ProcessInfo(rank=rank, world_size=world, local_rank=local_rank, device=resolved, owns_process_group=owns)


def shutdown_distributed(proc: ProcessInfo) -> None:
    """Leave the process group `init_distributed` joined for `proc` (one the caller made is left alone), then collect
    the reference cycles (modules and their hooks) that still hold groups, so that their gloo threads stop now
    rather than during the interpreter's teardown (`end_process` says what else keeps a group alive).

    Call it when the work finished and the objects holding groups are out of scope, never on an error: a rank that
    failed while the others wait in a collective would hang here (torchtitan destroys on success only, for the same
    reason).
    """
    if proc.owns_process_group and dist.is_initialized():
        dist.destroy_process_group()
        gc.collect()


def end_process(code: int) -> NoReturn:
    """Exit an entry point with `code`. A torchrun rank (WORLD_SIZE > 1) exits without tearing down the interpreter:
    its non-daemon threads are joined and its exit handlers run first, as at a normal exit, so files and logs are
    complete.

    Why: PyTorch keeps a C++ reference to every group a functional collective has run on, after
    `destroy_process_group` too (measured with torch 2.13), and DTensor's collectives are functional ones (FSDP2's
    gradient clipping and state dicts use them). So a training rank's gloo threads are still running when the
    interpreter is torn down, and that teardown sometimes aborted a finished CPU run (`terminate called without an
    active exception`, SIGABRT, which torchrun reports as a failed run; seen in CI and in 5 of 15 runs of the
    two-rank tests here). One process has no group and exits normally.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        sys.exit(code)
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # what Python runs at exit (logging's flush and close, multiprocessing's cleanup)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_reduce_mean_(t: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= world_size()
    return t


def dp_rank_and_size(context_parallel_size: int = 1) -> tuple[int, int]:
    """Data-parallel rank and size: CP groups are consecutive ranks that read the same sample."""
    cp = max(int(context_parallel_size), 1)
    if world_size() == 1:
        return 0, 1
    return dist.get_rank() // cp, world_size() // cp


def context_parallel_group(context_parallel_size: int):
    """This rank's CP group (consecutive ranks). Every rank must call this (new_group is collective)."""
    world, rank = world_size(), dist.get_rank()
    if world % context_parallel_size:
        raise ValueError(f"world size {world} is not divisible by context_parallel_size={context_parallel_size}")
    mine = None
    for start in range(0, world, context_parallel_size):
        ranks = list(range(start, start + context_parallel_size))
        group = dist.new_group(ranks)
        if rank in ranks:
            mine = group
    return mine


def _fsdp_mesh(fsdp_shard_size: int):
    from torch.distributed.device_mesh import init_device_mesh

    world = world_size()
    shard = world if fsdp_shard_size <= 0 else min(fsdp_shard_size, world)
    if world % shard:
        raise ValueError(f"world size {world} is not divisible by fsdp_shard_size={shard}")
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if shard == world:
        return init_device_mesh(device_type, (world,), mesh_dim_names=("shard",))
    return init_device_mesh(device_type, (world // shard, shard), mesh_dim_names=("replicate", "shard"))


def apply_fsdp(net: nn.Module, fsdp_shard_size: int) -> nn.Module:
    """FSDP2 per block plus the root. Compute runs in the frozen weights' dtype (bf16 on GPU), gradients are
    reduced in fp32, and the sharded parameters (fp32 adapters / fp32 full weights) are the master copy."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dtypes = {p.dtype for p in net.parameters()}
    compute_dtype = torch.bfloat16 if torch.bfloat16 in dtypes else None
    mp = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    mesh = _fsdp_mesh(fsdp_shard_size)
    for block in net.blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(net, mesh=mesh, mp_policy=mp)
    return net


def parallelize_net(net: nn.Module, fsdp_shard_size: int = 0, context_parallel_size: int = 1) -> nn.Module:
    """Context parallelism over groups of `context_parallel_size` consecutive ranks, then FSDP2 over all ranks
    when anything is trainable (a frozen inference network is replicated). A no-op for one process."""
    if world_size() == 1:
        if context_parallel_size > 1:
            raise ValueError(f"context_parallel_size={context_parallel_size} needs that many processes (torchrun)")
        return net
    if context_parallel_size > 1:
        from cosmos_predict2.parallel.context_parallel import apply_context_parallel

        apply_context_parallel(net, context_parallel_group(context_parallel_size))
    if any(p.requires_grad for p in net.parameters()):
        apply_fsdp(net, fsdp_shard_size)
    return net


__all__ = [
    "ProcessInfo",
    "all_reduce_mean_",
    "barrier",
    "dp_rank_and_size",
    "end_process",
    "init_distributed",
    "is_main_process",
    "parallelize_net",
    "resolve_device",
    "shutdown_distributed",
    "world_size",
]
