"""Classifier-free-guidance parallelism: the two guidance branches of every sampling step on two halves of the GPUs.

A guided step evaluates the network twice (with the prompt and with the negative prompt) on the same latent. With
`--guidance_parallel` the first half of the ranks computes the conditional branch and the second half the
unconditional one, each with context parallelism over its own half (consecutive ranks, as `context_parallel_group`
builds them); rank i and rank i + n/2 then exchange their predictions (one all-gather of the x0 latent, ~12 MB at
720p) and both take the same guided step. Every rank samples from the same seeded noise, so the trajectories stay
identical and rank 0 writes the video. Against context parallelism over all n GPUs this halves the all-to-alls per
forward and keeps each GPU's attention on twice the tokens (better kernel efficiency); the branch results equal
those of `--sequential_guidance` on one GPU.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class GuidanceParallel:
    """This rank's guidance branch (0: conditional, 1: unconditional) and its exchange with the partner rank."""

    def __init__(self, group, branch: int) -> None:
        self.group = group
        self.branch = branch

    def exchange(self, x0_mine_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0 conditional, x0 unconditional) from this rank's branch and the partner's."""
        both = [torch.empty_like(x0_mine_B) for _ in range(2)]
        dist.all_gather(both, x0_mine_B.contiguous(), group=self.group)
        return both[0], both[1]


def guidance_parallel(world_size: int, rank: int) -> GuidanceParallel:
    """Pairs (i, i + world/2): ranks below world/2 take the conditional branch. Every rank must call this
    (new_group is collective)."""
    if world_size < 2 or world_size % 2:
        raise ValueError(f"guidance parallelism needs an even number of processes, got {world_size}")
    half = world_size // 2
    mine = None
    for i in range(half):
        group = dist.new_group([i, i + half])
        if rank in (i, i + half):
            mine = group
    return GuidanceParallel(mine, branch=0 if rank < half else 1)
