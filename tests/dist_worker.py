"""Worker for tests/test_parallel.py, started with torchrun (gloo on CPU, NCCL on GPUs): context parallelism must
give the same outputs and gradients as one process, and leaving the process group must stop gloo's threads (left
running, they can abort the interpreter at exit)."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from cosmos_predict2.networks import build_net
from cosmos_predict2.networks.weights import randomize_
from cosmos_predict2.parallel import end_process, init_distributed, parallelize_net, shutdown_distributed


def main(out_path: str) -> None:
    proc = init_distributed()
    device = proc.device
    torch.manual_seed(0)
    net = randomize_(build_net("tiny", crossattn_emb_channels=32), seed=3).to(device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 4, 8, 12, generator=g)
    t = torch.rand(1, 4, generator=g)
    ctx = torch.randn(1, 7, 32, generator=g)
    cond = torch.zeros(1, 1, 4, 8, 12)
    cond[:, :, :1] = 1
    x, t, ctx, cond = (v.to(device) for v in (x, t, ctx, cond))
    net.requires_grad_(False)  # replicate (no FSDP): compare raw per-rank gradients
    parallelize_net(net, fsdp_shard_size=1, context_parallel_size=dist.get_world_size())
    net.requires_grad_(True)
    out = net(x, t, ctx, cond)
    out.square().mean().backward()
    grads = torch.cat([p.grad.flatten() for p in net.parameters()])
    dist.all_reduce(grads)
    grads /= dist.get_world_size()  # the average FSDP would take
    rank, result = dist.get_rank(), {"out": out.detach().cpu(), "grads": grads.cpu()}
    del net, out  # the network's context-parallel attention holds the group
    shutdown_distributed(proc)
    result["gloo_threads_left"] = gloo_threads()
    if rank == 0:
        torch.save(result, out_path)


def gloo_threads() -> int:
    """This process's threads named like gloo's (Linux names them in /proc; elsewhere 0)."""
    if not os.path.isdir("/proc/self/task"):
        return 0
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return sum(name.startswith(("pt_gloo", "gloo_")) for name in names)


if __name__ == "__main__":
    main(sys.argv[1])
    end_process(0)
