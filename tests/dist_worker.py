"""Worker for tests/test_parallel.py, started with torchrun (gloo on CPU, NCCL on GPUs): context parallelism must
give the same outputs and gradients as one process."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from cosmos_predict2.networks import build_net
from cosmos_predict2.networks.weights import randomize_
from cosmos_predict2.parallel import init_distributed, parallelize_net


def main(out_path: str) -> None:
    device = init_distributed().device
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
    if dist.get_rank() == 0:
        torch.save({"out": out.detach().cpu(), "grads": grads.cpu()}, out_path)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
