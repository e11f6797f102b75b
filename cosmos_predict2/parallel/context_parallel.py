"""Context parallelism for the DiT (docs/reference.md §10): the latent is split along T across the ranks of a CP group.

Each rank runs the blocks on its T/cp frames. Self-attention needs every token, so q/k/v are exchanged with one
all-to-all (Ulysses): each rank gets the whole sequence for num_heads/cp heads, runs SDPA, and a second
all-to-all returns its frames with all heads. Cross-attention, the MLP and adaLN are per token and stay local.
The CP group's ranks read the same sample, and every rank gathers the full output, so the loss is computed
identically on each of them.

Gradients: every CP rank back-propagates the same loss through its own frames only, so its parameter gradients
are a partial sum. The output gather scales its backward by cp, so that the data-parallel *average* taken by
FSDP over all ranks (dp x cp) equals the average over dp of the full-sequence gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from cosmos_predict2.networks.attention import attention


class _AllToAll(torch.autograd.Function):
    """All-to-all over dim 0 in equal parts; its backward is the same all-to-all of the gradient (part j of what a
    rank received came from rank j, so part j of the gradient goes back to it).

    c10d's collective, not the functional one (`all_to_all_single_autograd`), so that leaving the process group frees
    the group (see `parallel.end_process`). Under inference mode and no_grad this runs the forward alone.
    """

    @staticmethod
    def forward(ctx, send: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        return _exchange(send, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _exchange(grad, ctx.group), None


def _exchange(send: torch.Tensor, group) -> torch.Tensor:
    send = send.contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    return recv


def _all_to_all(send: torch.Tensor, group) -> torch.Tensor:
    """All-to-all over dim 0; differentiable (the backward is the reverse all-to-all) when a gradient is needed."""
    return _AllToAll.apply(send, group)


def cp_size_and_rank(group) -> tuple[int, int]:
    return dist.get_world_size(group), dist.get_rank(group)


def local_frame_offset(T_full: int, group) -> int:
    cp, rank = cp_size_and_rank(group)
    return rank * (T_full // cp)


def split_frames(group, *tensors_B_T: torch.Tensor | None) -> list[torch.Tensor | None]:
    """This rank's contiguous share of dim 1 (frames) of each tensor."""
    cp, rank = cp_size_and_rank(group)
    out = []
    for t in tensors_B_T:
        if t is None:
            out.append(None)
            continue
        T = t.shape[1]
        if T % cp:
            raise ValueError(
                f"context parallelism: {T} latent frames are not divisible by context_parallel_size={cp} "
                "(93 pixel frames = 24 latent frames: use 1, 2, 3, 4, 6, 8, 12 or 24 ranks)"
            )
        n = T // cp
        out.append(t[:, rank * n : (rank + 1) * n])
    return out


class _GatherFrames(torch.autograd.Function):
    """All-gather along dim 2 ([B, C, T, H, W]); backward returns this rank's slice of the (replicated) gradient
    times cp (see the module docstring)."""

    @staticmethod
    def forward(ctx, x_B_C_t_H_W: torch.Tensor, group) -> torch.Tensor:
        cp, rank = cp_size_and_rank(group)
        ctx.group, ctx.rank, ctx.cp, ctx.t = group, rank, cp, x_B_C_t_H_W.shape[2]
        parts = [torch.empty_like(x_B_C_t_H_W) for _ in range(cp)]
        dist.all_gather(parts, x_B_C_t_H_W.contiguous(), group=group)
        return torch.cat(parts, dim=2)

    @staticmethod
    def backward(ctx, grad_B_C_T_H_W: torch.Tensor):
        t = ctx.t
        return grad_B_C_T_H_W[:, :, ctx.rank * t : (ctx.rank + 1) * t] * ctx.cp, None


def gather_frames(x_B_C_t_H_W: torch.Tensor, group) -> torch.Tensor:
    return _GatherFrames.apply(x_B_C_t_H_W, group)


def _seq_to_heads(x_B_l_H_D: torch.Tensor, group) -> torch.Tensor:
    """[B, L/cp, H, D] (local tokens, all heads) -> [B, L, H/cp, D] (all tokens, local heads)."""
    cp, _ = cp_size_and_rank(group)
    B, L_local, H, D = x_B_l_H_D.shape
    if H % cp:
        raise ValueError(f"context parallelism: num_heads={H} is not divisible by context_parallel_size={cp}")
    send = x_B_l_H_D.reshape(B, L_local, cp, H // cp, D).permute(2, 0, 1, 3, 4).contiguous()
    recv = _all_to_all(send, group)  # [cp(src), B, L_local, H/cp, D]
    return recv.permute(1, 0, 2, 3, 4).reshape(B, cp * L_local, H // cp, D)


def _heads_to_seq(x_B_L_h_D: torch.Tensor, group) -> torch.Tensor:
    """[B, L, H/cp, D] -> [B, L/cp, H, D] (inverse of _seq_to_heads)."""
    cp, _ = cp_size_and_rank(group)
    B, L, h, D = x_B_L_h_D.shape
    send = x_B_L_h_D.reshape(B, cp, L // cp, h, D).permute(1, 0, 2, 3, 4).contiguous()
    recv = _all_to_all(send, group)  # [cp(head group), B, L/cp, h, D]
    return recv.permute(1, 2, 0, 3, 4).reshape(B, L // cp, cp * h, D)


def ulysses_attention(q_B_l_H_D: torch.Tensor, k_B_l_H_D: torch.Tensor, v_B_l_H_D: torch.Tensor, group,
                      local_attention=attention, video_size: tuple[int, int, int] | None = None) -> torch.Tensor:
    """All-to-all to the whole sequence on heads/cp heads, `local_attention` there, all-to-all back. `video_size` is
    this rank's token grid; the kernel sees the whole one (its frames times the group size)."""
    q, k, v = (_seq_to_heads(t, group) for t in (q_B_l_H_D, k_B_l_H_D, v_B_l_H_D))
    full_size = None if video_size is None else (video_size[0] * dist.get_world_size(group), *video_size[1:])
    return _heads_to_seq(local_attention(q, k, v, video_size=full_size), group)


class UlyssesAttention:
    """The attention call of one self-attention layer under context parallelism (`Attention.attention_fn`),
    wrapping the layer's own kernel call (dense or neighborhood attention)."""

    def __init__(self, group, local_attention=attention) -> None:
        self.group = group
        self.local_attention = local_attention

    def __call__(self, q_B_l_H_D: torch.Tensor, k_B_l_H_D: torch.Tensor, v_B_l_H_D: torch.Tensor,
                 video_size: tuple[int, int, int] | None = None) -> torch.Tensor:
        return ulysses_attention(q_B_l_H_D, k_B_l_H_D, v_B_l_H_D, self.group, self.local_attention, video_size)


class ContextParallelFrames:
    """The network's frame split (`MiniTrainDIT.frame_split`): this rank's contiguous T/cp frames after the
    embeddings, and the all-gather of the output."""

    def __init__(self, group) -> None:
        self.group = group

    def split(self, *tensors_B_T: torch.Tensor | None) -> tuple[int, list[torch.Tensor | None]]:
        return local_frame_offset(tensors_B_T[0].shape[1], self.group), split_frames(self.group, *tensors_B_T)

    def gather(self, out_B_C_t_H_W: torch.Tensor) -> torch.Tensor:
        return gather_frames(out_B_C_t_H_W, self.group)


def apply_context_parallel(net: torch.nn.Module, group) -> torch.nn.Module:
    """Plug context parallelism into a plain network through its two seams (see the module docstring)."""
    net.frame_split = ContextParallelFrames(group)
    for module in net.modules():
        if getattr(module, "is_selfattn", False):
            module.attention_fn = UlyssesAttention(group, module.attention_fn)
    return net
