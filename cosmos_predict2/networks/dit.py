"""The Cosmos-Predict2 Video2World diffusion transformer (docs/reference.md §1).

One readable file: patch embedding, timestep embedding, 3D RoPE, the DiT block with per-frame adaLN
modulation ("adaLN-LoRA"), the final layer and unpatchify. Module and parameter names are exactly the
reference's, so released checkpoints load by name and PEFT targets (`q_proj`, `mlp.layer1`, ...) match.

Precision policy: weights and activations in the module's dtype (bf16 on GPU); fp32 for the timestep
sinusoid, the RoPE angles, RMSNorm statistics and the q/k normalisation + rotation.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import checkpoint

from cosmos_predict2.networks.attention import FA4_ATTENTION_OP, attention
from cosmos_predict2.networks.fused import maybe_fused
from cosmos_predict2.networks.neighborhood import apply_neighborhood_attention
from cosmos_predict2.networks.offload import ActivationOffload, in_backward

# "nested": every block checkpointed, and inside it each of its three sub-layers, so that the backward holds one
# sub-layer's tensors instead of a whole block's (u = one [L, D] block input: ~25 u instead of ~36 u, measured), for
# a second recompute of the linear layers of self- and cross-attention; self-attention itself runs twice per step,
# as with "full" (its output handed from the block's recompute to the sub-layer's: AttentionHandoff).
ACTIVATION_CHECKPOINTING = ("none", "full", "selective", "nested")


class FrameSplit(Protocol):
    """What context parallelism plugs into the network from outside (the `parallel` package sets it)."""

    def split(self, *tensors_B_T: torch.Tensor | None) -> tuple[int, list[torch.Tensor | None]]:
        """(offset of this rank's first frame, this rank's frames of each [B, T, ...] tensor)."""
        ...

    def gather(self, out_B_C_t_H_W: torch.Tensor) -> torch.Tensor:
        """Every rank's frames back together along dim 2."""
        ...


class RMSNorm(nn.Module):
    """RMSNorm whose statistics are always computed in fp32 (bf16 sums of squares lose precision)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _rms_norm_fp32(x, self.weight, self.eps).to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def layer_norm_no_affine(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=eps)


@maybe_fused
def norm_modulate(x_B_T_S_D: torch.Tensor, shift_B_T_1_D: torch.Tensor, scale_B_T_1_D: torch.Tensor) -> torch.Tensor:
    """LayerNorm(x) * (1 + scale) + shift, in x's dtype."""
    return (layer_norm_no_affine(x_B_T_S_D) * (1 + scale_B_T_1_D) + shift_B_T_1_D).to(x_B_T_S_D.dtype)


@maybe_fused
def gated_residual(x: torch.Tensor, gate: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return x + gate * h


def _rms_norm_fp32(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


@maybe_fused
def rms_norm_rope(
    x_B_L_H_D: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """Per-head RMSNorm then rotate-half RoPE, both in fp32, result in x's dtype (docs/reference.md §1, step 5)."""
    x = _rms_norm_fp32(x_B_L_H_D, weight, eps)
    return (x * cos + rotate_half(x) * sin).to(x_B_L_H_D.dtype)


@maybe_fused
def rms_norm(x_B_L_H_D: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _rms_norm_fp32(x_B_L_H_D, weight, eps).to(x_B_L_H_D.dtype)


# ----------------------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------------------


class Patchify(nn.Module):
    """[B, C, T, H, W] -> [B, T', H', W', C*pt*p*p], features ordered (C, t, p1, p2) (docs/reference.md §1, step 2)."""

    def __init__(self, patch_spatial: int, patch_temporal: int) -> None:
        super().__init__()
        self.p = patch_spatial
        self.pt = patch_temporal

    def forward(self, x_B_C_T_H_W: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x_B_C_T_H_W.shape
        p, pt = self.p, self.pt
        x = x_B_C_T_H_W.reshape(B, C, T // pt, pt, H // p, p, W // p, p)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(B, T // pt, H // p, W // p, C * pt * p * p)


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, model_channels: int, patch_spatial: int, patch_temporal: int) -> None:
        super().__init__()
        in_features = in_channels * patch_temporal * patch_spatial * patch_spatial
        self.proj = nn.Sequential(
            Patchify(patch_spatial, patch_temporal),
            nn.Linear(in_features, model_channels, bias=False),
        )

    def forward(self, x_B_C_T_H_W: torch.Tensor) -> torch.Tensor:
        return self.proj(x_B_C_T_H_W)


class Timesteps(nn.Module):
    """Sinusoidal features of t in fp32, ordered [cos, sin] (docs/reference.md §1, step 3)."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.num_channels = num_channels

    def forward(self, t_B_T: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        k = torch.arange(half, dtype=torch.float32, device=t_B_T.device)
        freqs = torch.exp(-math.log(10000.0) * k / half)
        angles = t_B_T.float()[..., None] * freqs
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_features: int, out_features: int, use_adaln_lora: bool) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, out_features, bias=False)
        self.activation = nn.SiLU()
        self.linear_2 = nn.Linear(out_features, 3 * out_features if use_adaln_lora else out_features, bias=False)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.activation(self.linear_1(sample)))


class VideoRopePosition3DEmb(nn.Module):
    """3D rotary position angles (docs/reference.md §1, "3D RoPE").

    Holds no parameters or persistent buffers (the reference's `seq`/`*_range` buffers in checkpoint files are
    ignored on load). Tables are computed once per latent size and cached: the forward pass only looks them up.

    angles_dtype: fp32 (default) computes exact angles. The reference keeps its frequency buffers in the module,
    which is cast to bf16, so its angles come out of a bf16 outer product (spacing 0.25-0.5 rad at the larger
    positions); "bfloat16" reproduces that, for bit-closer agreement with the reference's outputs.
    """

    def __init__(
        self,
        head_dim: int,
        h_extrapolation_ratio: float = 1.0,
        w_extrapolation_ratio: float = 1.0,
        t_extrapolation_ratio: float = 1.0,
        angles_dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.angles_dtype = angles_dtype
        self.dim_h = head_dim // 6 * 2
        self.dim_w = self.dim_h
        self.dim_t = head_dim - self.dim_h - self.dim_w
        self.h_theta = 10000.0 * h_extrapolation_ratio ** (self.dim_h / (self.dim_h - 2))
        self.w_theta = 10000.0 * w_extrapolation_ratio ** (self.dim_w / (self.dim_w - 2))
        self.t_theta = 10000.0 * t_extrapolation_ratio ** (self.dim_t / (self.dim_t - 2))
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _inv_freq(self, theta: float, dim: int, device: torch.device) -> torch.Tensor:
        if self.angles_dtype == torch.float32:
            j = torch.arange(0, dim, 2, dtype=torch.float64, device=device)[: dim // 2]
            return (1.0 / theta ** (j / dim)).float()
        # The reference: a bf16 buffer j/dim, then 1 / theta**range evaluated in bf16.
        j_over_dim = (torch.arange(0, dim, 2, dtype=torch.float32, device=device)[: dim // 2] / dim)
        return 1.0 / theta ** j_over_dim.to(self.angles_dtype)

    def angles(self, T: int, H: int, W: int, device: torch.device, t_offset: int = 0) -> torch.Tensor:
        """Angle per token and head channel, [T*H*W, head_dim] fp32, tokens t-major then h then w."""
        dt = self.angles_dtype
        t_pos = torch.arange(t_offset, t_offset + T, dtype=torch.float32, device=device).to(dt)
        h_pos = torch.arange(H, dtype=torch.float32, device=device).to(dt)
        w_pos = torch.arange(W, dtype=torch.float32, device=device).to(dt)
        ang_t = torch.outer(t_pos, self._inv_freq(self.t_theta, self.dim_t, device))
        ang_h = torch.outer(h_pos, self._inv_freq(self.h_theta, self.dim_h, device))
        ang_w = torch.outer(w_pos, self._inv_freq(self.w_theta, self.dim_w, device))
        ang = torch.cat(
            [
                ang_t[:, None, None, :].expand(T, H, W, -1),
                ang_h[None, :, None, :].expand(T, H, W, -1),
                ang_w[None, None, :, :].expand(T, H, W, -1),
            ],
            dim=-1,
        ).reshape(T * H * W, -1)
        return torch.cat([ang, ang], dim=-1).float()

    def forward(
        self, T: int, H: int, W: int, device: torch.device, t_offset: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each [T*H*W, 1, head_dim] fp32, broadcastable over [B, L, heads, head_dim]."""
        key = (T, H, W, t_offset, str(device))
        if key not in self._cache:
            ang = self.angles(T, H, W, device, t_offset)[:, None, :]
            self._cache[key] = (torch.cos(ang), torch.sin(ang))
        return self._cache[key]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


# ----------------------------------------------------------------------------------------------------------
# Block
# ----------------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Attention with per-head q/k RMSNorm; RoPE for self-attention only; no mask (docs/reference.md §1, step 5)."""

    def __init__(self, query_dim: int, context_dim: int | None, n_heads: int, head_dim: int) -> None:
        super().__init__()
        self.is_selfattn = context_dim is None
        context_dim = query_dim if context_dim is None else context_dim
        inner_dim = n_heads * head_dim
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.q_proj = nn.Linear(query_dim, inner_dim, bias=False)
        self.q_norm = RMSNorm(head_dim, eps=1e-6)
        self.k_proj = nn.Linear(context_dim, inner_dim, bias=False)
        self.k_norm = RMSNorm(head_dim, eps=1e-6)
        self.v_proj = nn.Linear(context_dim, inner_dim, bias=False)
        self.output_proj = nn.Linear(inner_dim, query_dim, bias=False)
        # The attention kernel call, q/k/v [B, L, heads, head_dim] -> same shape; self-attention also gets the token
        # grid (T, H, W) as `video_size`. A seam: neighborhood attention (the NATTEN variants) replaces it on some
        # self-attention layers, and context parallelism applied from outside wraps it in an all-to-all.
        self.attention_fn: Callable[..., torch.Tensor] = attention

    def forward(
        self,
        x_B_L_D: torch.Tensor,
        context_B_M_D: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        video_size: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        B, L, _ = x_B_L_D.shape
        context = x_B_L_D if context_B_M_D is None else context_B_M_D.to(x_B_L_D.dtype)
        q = self.q_proj(x_B_L_D).unflatten(-1, (self.n_heads, self.head_dim))
        k = self.k_proj(context).unflatten(-1, (self.n_heads, self.head_dim))
        v = self.v_proj(context).unflatten(-1, (self.n_heads, self.head_dim))
        if rope is not None:
            q = rms_norm_rope(q, self.q_norm.weight, self.q_norm.eps, *rope)
            k = rms_norm_rope(k, self.k_norm.weight, self.k_norm.eps, *rope)
        else:
            q = rms_norm(q, self.q_norm.weight, self.q_norm.eps)
            k = rms_norm(k, self.k_norm.weight, self.k_norm.eps)
        grid = {"video_size": video_size} if self.is_selfattn else {}
        out_B_L_H_D = self.attention_fn(q, k, v, **grid)
        return self.output_proj(out_B_L_H_D.reshape(B, L, -1))


class GPT2FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.layer1 = nn.Linear(d_model, d_ff, bias=False)
        self.activation = nn.GELU()  # exact (erf) GELU, as the reference
        self.layer2 = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer1(x)
        if getattr(self.layer2, "takes_gelu_input", False):
            # A fused LoRA layer (lora/adapters.py) applies this exact GELU itself and keeps h, not GELU(h), for
            # the backward: one [tokens, 4 D] tensor fewer at the training step's peak.
            return self.layer2(h, gelu_input=True)
        return self.layer2(self.activation(h))


def adaln_modulation(model_channels: int, adaln_lora_dim: int, n_chunks: int, use_adaln_lora: bool) -> nn.Sequential:
    if use_adaln_lora:
        return nn.Sequential(
            nn.SiLU(),
            nn.Linear(model_channels, adaln_lora_dim, bias=False),
            nn.Linear(adaln_lora_dim, n_chunks * model_channels, bias=False),
        )
    return nn.Sequential(nn.SiLU(), nn.Linear(model_channels, n_chunks * model_channels, bias=False))


class Block(nn.Module):
    """x = x + gate * SubLayer(LN(x) * (1 + scale) + shift), 3 sub-layers (docs/reference.md §1, step 4)."""

    def __init__(
        self,
        x_dim: int,
        context_dim: int,
        num_heads: int,
        mlp_ratio: float,
        use_adaln_lora: bool,
        adaln_lora_dim: int,
    ) -> None:
        super().__init__()
        head_dim = x_dim // num_heads
        self.self_attn = Attention(x_dim, None, num_heads, head_dim)
        self.cross_attn = Attention(x_dim, context_dim, num_heads, head_dim)
        self.mlp = GPT2FeedForward(x_dim, int(x_dim * mlp_ratio))
        self.use_adaln_lora = use_adaln_lora
        self.adaln_modulation_self_attn = adaln_modulation(x_dim, adaln_lora_dim, 3, use_adaln_lora)
        self.adaln_modulation_cross_attn = adaln_modulation(x_dim, adaln_lora_dim, 3, use_adaln_lora)
        self.adaln_modulation_mlp = adaln_modulation(x_dim, adaln_lora_dim, 3, use_adaln_lora)

    def _modulation(self, layer: nn.Sequential, emb_B_T_D: torch.Tensor, adaln_lora_B_T_3D: torch.Tensor | None):
        m = layer(emb_B_T_D)
        if adaln_lora_B_T_3D is not None:
            m = m + adaln_lora_B_T_3D
        # [B, T, 3D] -> three [B, T, 1, D], broadcast over the H*W tokens of each frame.
        return [c.unsqueeze(2) for c in m.chunk(3, dim=-1)]

    def forward(
        self,
        x_B_T_S_D: torch.Tensor,
        emb_B_T_D: torch.Tensor,
        crossattn_emb_B_M_D: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        adaln_lora_B_T_3D: torch.Tensor | None = None,
        repeat_after_self_attn: int = 1,
        video_size: tuple[int, int, int] | None = None,
        sublayer_checkpoints: AttentionHandoff | None = None,
    ) -> torch.Tensor:
        """repeat_after_self_attn=k: x and emb hold B/k distinct rows and crossattn_emb all B; the rows are tiled
        k times after self-attention, which does not see the text (see MiniTrainDIT.forward, shared_input_repeats).
        sublayer_checkpoints: each sub-layer in its own checkpoint (activation_checkpointing="nested"), with this
        call's hand-off of the self-attention output from the block's recompute to the sub-layer's."""

        def sublayer_step(sublayer, modulation_layer, x, emb, adaln_lora, **kwargs):
            B, T, S, D = x.shape
            shift, scale, gate = self._modulation(modulation_layer, emb, adaln_lora)
            h = norm_modulate(x, shift, scale)
            h = sublayer(h.reshape(B, T * S, D), **kwargs).reshape(B, T, S, D)
            return gated_residual(x, gate, h)

        def run(sublayer, modulation_layer, x, emb, adaln_lora, **kwargs):
            if sublayer_checkpoints is None or not torch.is_grad_enabled():
                return sublayer_step(sublayer, modulation_layer, x, emb, adaln_lora, **kwargs)
            if sublayer is self.self_attn:
                # The block's recompute (in the backward) records the attention output it computes to rebuild the
                # next sub-layers' inputs; this sub-layer's own recompute, later in the same backward, replays it.
                handoff = sublayer_checkpoints
                kwargs["context_fn"] = handoff.recording if in_backward() else handoff.replaying
            return checkpoint(sublayer_step, sublayer, modulation_layer, x, emb, adaln_lora, use_reentrant=False,
                              **kwargs)  # fmt: skip

        emb, adaln_lora = emb_B_T_D, adaln_lora_B_T_3D
        x = run(self.self_attn, self.adaln_modulation_self_attn, x_B_T_S_D, emb, adaln_lora, rope=rope,
                video_size=video_size)
        if repeat_after_self_attn > 1:
            x, emb, adaln_lora = _tile_rows(repeat_after_self_attn, x, emb, adaln_lora)
        x = run(self.cross_attn, self.adaln_modulation_cross_attn, x, emb, adaln_lora,
                context_B_M_D=crossattn_emb_B_M_D)
        x = run(self.mlp, self.adaln_modulation_mlp, x, emb, adaln_lora)
        return x


def _distinct_rows(repeats: int, x_B_C_T_H_W: torch.Tensor, timesteps_B_T: torch.Tensor,
                   padding_mask: torch.Tensor | None, crossattn_emb: torch.Tensor) -> tuple:
    """A guidance batch of `repeats` copies: the first B/repeats rows of x, timesteps and padding mask."""
    if x_B_C_T_H_W.shape[0] % repeats or crossattn_emb.shape[0] != x_B_C_T_H_W.shape[0]:
        raise ValueError(
            f"shared_input_repeats={repeats} needs a batch that is a multiple of it with one text "
            f"embedding per row; got x {tuple(x_B_C_T_H_W.shape)}, text {tuple(crossattn_emb.shape)}"
        )
    distinct = x_B_C_T_H_W.shape[0] // repeats
    if padding_mask is not None and padding_mask.shape[0] > 1:
        padding_mask = padding_mask[:distinct]
    return x_B_C_T_H_W[:distinct], timesteps_B_T[:distinct], padding_mask


def _tile_rows(k: int, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """[b, ...] -> [k*b, ...] as torch.cat([t] * k): the row order of a guidance batch cat([x, x])."""
    return [None if t is None else t.repeat(k, *([1] * (t.ndim - 1))) for t in tensors]


class FinalLayer(nn.Module):
    def __init__(
        self, hidden_size: int, out_features: int, use_adaln_lora: bool, adaln_lora_dim: int
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.linear = nn.Linear(hidden_size, out_features, bias=False)
        self.adaln_modulation = adaln_modulation(hidden_size, adaln_lora_dim, 2, use_adaln_lora)

    def forward(
        self, x_B_T_S_D: torch.Tensor, emb_B_T_D: torch.Tensor, adaln_lora_B_T_3D: torch.Tensor | None
    ) -> torch.Tensor:
        m = self.adaln_modulation(emb_B_T_D)
        if adaln_lora_B_T_3D is not None:
            m = m + adaln_lora_B_T_3D[..., : 2 * self.hidden_size]
        shift, scale = (c.unsqueeze(2) for c in m.chunk(2, dim=-1))
        return self.linear(norm_modulate(x_B_T_S_D, shift, scale))


# ----------------------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------------------


def _check_keywords(unsupported: dict, **kw) -> None:
    """MiniTrainDIT's constructor checks: what the released models never use is refused, not silently ignored."""
    if unsupported:
        # Reference configs carry a few training-only knobs (e.g. `sac_config`, `atten_backend`) with no effect
        # on the math; anything else would silently change the network, so refuse it.
        ignorable = {"atten_backend", "sac_config", "use_wan_fp32_strategy", "pos_emb_learnable",
                     "pos_emb_interpolation", "min_fps", "max_fps", "extra_h_extrapolation_ratio",
                     "extra_w_extrapolation_ratio", "extra_t_extrapolation_ratio"}
        unknown = sorted(set(unsupported) - ignorable)
        if unknown:
            raise TypeError(f"MiniTrainDIT got unknown keyword arguments {unknown}")
    if kw["pos_emb_cls"] != "rope3d":
        raise ValueError(f"pos_emb_cls={kw['pos_emb_cls']!r} is not supported; Cosmos-Predict2 uses 'rope3d'")
    if kw["extra_per_block_abs_pos_emb"] or kw["rope_enable_fps_modulation"]:
        raise ValueError(
            "extra_per_block_abs_pos_emb and rope_enable_fps_modulation are False for every released "
            "Cosmos-Predict2 Video2World model and are not implemented"
        )
    if kw["model_channels"] % kw["num_heads"]:
        raise ValueError(f"model_channels={kw['model_channels']} is not divisible by num_heads={kw['num_heads']}")
    if kw["activation_checkpointing"] not in ACTIVATION_CHECKPOINTING:
        raise ValueError(f"activation_checkpointing must be one of {ACTIVATION_CHECKPOINTING}")
    if kw["activation_offload"] and kw["activation_checkpointing"] == "none":
        raise ValueError("activation_offload keeps the checkpointed block inputs in host memory: it needs "
                         "activation_checkpointing 'full', 'selective' or 'nested'")


class MiniTrainDIT(nn.Module):
    """The Cosmos-Predict2 DiT. Constructor keywords are the reference's so that configs port over."""

    def __init__(
        self,
        max_img_h: int = 240,
        max_img_w: int = 240,
        max_frames: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        patch_spatial: int = 2,
        patch_temporal: int = 1,
        concat_padding_mask: bool = True,
        model_channels: int = 2048,
        num_blocks: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        crossattn_emb_channels: int = 1024,
        pos_emb_cls: str = "rope3d",
        use_adaln_lora: bool = True,
        adaln_lora_dim: int = 256,
        rope_h_extrapolation_ratio: float = 1.0,
        rope_w_extrapolation_ratio: float = 1.0,
        rope_t_extrapolation_ratio: float = 1.0,
        extra_per_block_abs_pos_emb: bool = False,
        rope_enable_fps_modulation: bool = False,
        activation_checkpointing: str = "none",
        rope_angles_dtype: str = "float32",
        selective_checkpoint_budget_gib: float | None = None,
        activation_offload: bool = False,
        natten_parameters: list[Mapping | None] | None = None,
        **unsupported,
    ) -> None:
        super().__init__()
        _check_keywords(unsupported, pos_emb_cls=pos_emb_cls, extra_per_block_abs_pos_emb=extra_per_block_abs_pos_emb,
                        rope_enable_fps_modulation=rope_enable_fps_modulation, model_channels=model_channels,
                        num_heads=num_heads, activation_checkpointing=activation_checkpointing,
                        activation_offload=activation_offload)  # fmt: skip

        self.max_img_h, self.max_img_w, self.max_frames = max_img_h, max_img_w, max_frames
        self.in_channels, self.out_channels = in_channels, out_channels
        self.patch_spatial, self.patch_temporal = patch_spatial, patch_temporal
        self.concat_padding_mask = concat_padding_mask
        self.model_channels, self.num_heads = model_channels, num_heads
        self.use_adaln_lora = use_adaln_lora
        self.activation_checkpointing = activation_checkpointing
        # Selective checkpointing keeps the self-attention outputs of as many blocks as fit this budget (None: all).
        self.selective_checkpoint_budget_gib = selective_checkpoint_budget_gib
        # Activation offload (networks/offload.py): the checkpointed block inputs wait in host memory.
        self.activation_offload = ActivationOffload() if activation_offload else None

        embed_in_channels = in_channels + (1 if concat_padding_mask else 0)
        self.x_embedder = PatchEmbed(embed_in_channels, model_channels, patch_spatial, patch_temporal)
        self.pos_embedder = VideoRopePosition3DEmb(
            model_channels // num_heads,
            h_extrapolation_ratio=rope_h_extrapolation_ratio,
            w_extrapolation_ratio=rope_w_extrapolation_ratio,
            t_extrapolation_ratio=rope_t_extrapolation_ratio,
            angles_dtype={"float32": torch.float32, "bfloat16": torch.bfloat16}[rope_angles_dtype],
        )
        self.t_embedder = nn.Sequential(
            Timesteps(model_channels),
            TimestepEmbedding(model_channels, model_channels, use_adaln_lora=use_adaln_lora),
        )
        self.t_embedding_norm = RMSNorm(model_channels, eps=1e-6)
        self.blocks = nn.ModuleList(
            [
                Block(model_channels, crossattn_emb_channels, num_heads, mlp_ratio, use_adaln_lora, adaln_lora_dim)
                for _ in range(num_blocks)
            ]
        )
        self.final_layer = FinalLayer(
            model_channels, patch_spatial * patch_spatial * patch_temporal * out_channels, use_adaln_lora,
            adaln_lora_dim,
        )
        if natten_parameters is not None:  # the sparse-attention (NATTEN) variants: docs/reference.md §13
            apply_neighborhood_attention(self, natten_parameters)
        # A seam for context parallelism applied from outside (the parallel package): None, or an object that
        # keeps this rank's share of the latent frames after the embeddings and gathers the output.
        self.frame_split: FrameSplit | None = None

    # --- helpers -------------------------------------------------------------------------------------------

    def _embed_timesteps(self, timesteps_B_T: torch.Tensor, T: int, dtype: torch.dtype):
        """(emb_B_T_D, adaln_lora_B_T_3D or None) of the timesteps ([B] or [B, T])."""
        if timesteps_B_T.ndim == 1:
            timesteps_B_T = timesteps_B_T[:, None].expand(-1, T)
        sinusoid_B_T_D = self.t_embedder[0](timesteps_B_T)
        if self.use_adaln_lora:
            adaln_lora_B_T_3D = self.t_embedder[1](sinusoid_B_T_D.to(dtype))
            # the embedding is the normalised raw sinusoid (docs/reference.md §1, step 3)
            return self.t_embedding_norm(sinusoid_B_T_D).to(dtype), adaln_lora_B_T_3D
        return self.t_embedding_norm(self.t_embedder[1](sinusoid_B_T_D.to(dtype))), None

    def _concat_padding_mask(self, x_B_C_T_H_W: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        B, _, T, H, W = x_B_C_T_H_W.shape
        if padding_mask is None:
            mask = x_B_C_T_H_W.new_zeros(B, 1, T, H, W)
        else:
            mask = F.interpolate(padding_mask.to(x_B_C_T_H_W.dtype), size=(H, W), mode="nearest")
            mask = mask.expand(B, -1, -1, -1).unsqueeze(2).expand(B, 1, T, H, W)
        return torch.cat([x_B_C_T_H_W, mask], dim=1)

    def unpatchify(self, y_B_T_S_F: torch.Tensor, T: int, H: int, W: int) -> torch.Tensor:
        """Output features ordered (p1, p2, t, C): NOT the inverse of the input order (docs/reference.md §1, step 7)."""
        B = y_B_T_S_F.shape[0]
        p, pt = self.patch_spatial, self.patch_temporal
        y = y_B_T_S_F.reshape(B, T, H, W, p, p, pt, self.out_channels)
        y = y.permute(0, 7, 1, 6, 2, 4, 3, 5)  # B, C, T, pt, H, p1, W, p2
        return y.reshape(B, self.out_channels, T * pt, H * p, W * p)

    def _blocks_keeping_attention(self, x_B_T_S_D: torch.Tensor) -> int:
        """How many blocks keep their self-attention output under selective checkpointing: all, or as many as fit
        the budget (one output is the size of the block input)."""
        if self.selective_checkpoint_budget_gib is None:
            return len(self.blocks)
        per_block = x_B_T_S_D.numel() * x_B_T_S_D.element_size()
        return min(len(self.blocks), int(self.selective_checkpoint_budget_gib * 2**30 // per_block))

    def _run_block(self, index: int, block: Block, *args, **kwargs) -> torch.Tensor:
        if not torch.is_grad_enabled() or self.activation_checkpointing == "none":
            return block(*args, **kwargs)
        if self.activation_checkpointing == "selective" and index < self._blocks_keeping_attention(args[0]):
            kwargs["context_fn"] = selective_checkpoint_context if self.activation_offload is None else (
                lambda: self.activation_offload.selective_contexts(selective_checkpoint_context))
        if self.activation_checkpointing == "nested":
            kwargs["sublayer_checkpoints"] = AttentionHandoff()  # one per block call: forward and its recompute
        if self.activation_offload is None:
            return checkpoint(block, *args, use_reentrant=False, **kwargs)
        with self.activation_offload.block():
            return checkpoint(block, *args, use_reentrant=False, **kwargs)

    # --- forward -------------------------------------------------------------------------------------------

    def forward(
        self,
        x_B_C_T_H_W: torch.Tensor,
        timesteps_B_T: torch.Tensor,
        crossattn_emb: torch.Tensor,
        fps: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        shared_input_repeats: int = 1,
        **kwargs,
    ) -> torch.Tensor:
        """shared_input_repeats=k declares that the batch is k copies of the same B/k inputs (x, timesteps,
        padding mask) that differ only in crossattn_emb, as in a classifier-free-guidance batch cat([x, x]).
        Everything before the first cross-attention (patch and timestep embedding, the first block's
        self-attention) then runs once on the B/k distinct rows: 1 of the 28 self-attentions saved per extra
        copy, ~1.6% of a 720p forward, with the same result."""
        del fps, kwargs  # fps modulation of RoPE is off for every released model (docs/reference.md §1)
        dtype = self.x_embedder.proj[1].weight.dtype
        repeats = shared_input_repeats
        if repeats > 1:
            x_B_C_T_H_W, timesteps_B_T, padding_mask = _distinct_rows(repeats, x_B_C_T_H_W, timesteps_B_T,
                                                                      padding_mask, crossattn_emb)  # fmt: skip
        if self.concat_padding_mask:
            x_B_C_T_H_W = self._concat_padding_mask(x_B_C_T_H_W, padding_mask)
        x_B_T_H_W_D = self.x_embedder(x_B_C_T_H_W.to(dtype))
        B, T, H, W, D = x_B_T_H_W_D.shape
        if T > self.max_frames or H * self.patch_spatial > self.max_img_h or W * self.patch_spatial > self.max_img_w:
            raise ValueError(
                f"latent size T={T * self.patch_temporal}, H={H * self.patch_spatial}, W={W * self.patch_spatial} "
                f"exceeds the network's maximum ({self.max_frames}, {self.max_img_h}, {self.max_img_w})"
            )

        emb_B_T_D, adaln_lora_B_T_3D = self._embed_timesteps(timesteps_B_T, T, dtype)

        t_offset = 0
        # Context parallelism (docs/reference.md §10): this rank keeps its share of the frames.
        if self.frame_split is not None:
            t_offset, (x_B_T_H_W_D, emb_B_T_D, adaln_lora_B_T_3D) = self.frame_split.split(
                x_B_T_H_W_D, emb_B_T_D, adaln_lora_B_T_3D
            )
            T = x_B_T_H_W_D.shape[1]
        rope = self.pos_embedder(T, H, W, x_B_T_H_W_D.device, t_offset=t_offset)

        x = x_B_T_H_W_D.reshape(B, T, H * W, D)
        crossattn_emb = crossattn_emb.to(dtype)
        video_size = (T, H, W)  # this rank's frames under context parallelism
        for i, block in enumerate(self.blocks):
            if i == 0 and repeats > 1:
                x = self._run_block(i, block, x, emb_B_T_D, crossattn_emb, rope, adaln_lora_B_T_3D, repeats,
                                    video_size=video_size)
                emb_B_T_D, adaln_lora_B_T_3D = _tile_rows(repeats, emb_B_T_D, adaln_lora_B_T_3D)
            else:
                x = self._run_block(i, block, x, emb_B_T_D, crossattn_emb, rope, adaln_lora_B_T_3D,
                                    video_size=video_size)
        y_B_T_S_F = self.final_layer(x, emb_B_T_D, adaln_lora_B_T_3D)
        out_B_C_T_H_W = self.unpatchify(y_B_T_S_F, T, H, W)
        if self.frame_split is not None:
            out_B_C_T_H_W = self.frame_split.gather(out_B_C_T_H_W)
        return out_B_C_T_H_W


class MinimalV1LVGDiT(MiniTrainDIT):
    """Video2World DiT: the base network plus one input channel marking the conditioning latent frames."""

    def __init__(self, *args, timestep_scale: float = 1.0, **kwargs) -> None:
        in_channels = kwargs.pop("in_channels", 16)
        super().__init__(*args, in_channels=in_channels + 1, **kwargs)
        self.timestep_scale = timestep_scale

    def forward(
        self,
        x_B_C_T_H_W: torch.Tensor,
        timesteps_B_T: torch.Tensor,
        crossattn_emb: torch.Tensor,
        condition_video_input_mask_B_C_T_H_W: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        shared_input_repeats: int = 1,
        **kwargs,
    ) -> torch.Tensor:
        B, _, T, H, W = x_B_C_T_H_W.shape
        if condition_video_input_mask_B_C_T_H_W is None:
            mask = x_B_C_T_H_W.new_zeros(B, 1, T, H, W)
        else:
            mask = condition_video_input_mask_B_C_T_H_W.to(x_B_C_T_H_W.dtype)
        x = torch.cat([x_B_C_T_H_W, mask], dim=1)
        t_B_T = timesteps_B_T * self.timestep_scale
        return super().forward(
            x, t_B_T, crossattn_emb, fps=fps, padding_mask=padding_mask, shared_input_repeats=shared_input_repeats
        )


# ----------------------------------------------------------------------------------------------------------
# Selective activation checkpointing
# ----------------------------------------------------------------------------------------------------------

def _attention_ops() -> dict:
    """Attention ops -> where their key tensor sits in the arguments and its sequence dimension."""
    ops = {FA4_ATTENTION_OP: 1}  # [B, L, heads, D]
    for name in (
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
    ):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            ops[op.default] = 2  # [B, heads, L, D]
    return ops


_ATTENTION_OPS = _attention_ops()
# What is worth keeping, by recompute FLOPs per byte kept: an attention output over M keys costs 4*L*M*D FLOPs to
# recompute and 2*L*D bytes to keep, 2*M FLOP/byte (~169k for 720p self-attention, M = 84,480 tokens); a linear
# layer's output costs ~D_in FLOP/byte (2,048-5,120), cross-attention over the 512 text tokens 1,024. So only
# attention over many keys is kept; everything else is recomputed.
SELECTIVE_MIN_KEYS = 2048


def _save_attention_policy(ctx, op, *args, **kwargs):
    from torch.utils.checkpoint import CheckpointPolicy

    # Self-attention is ~85% of a block's FLOPs at 720p and its output one [L, D] tensor per block; keeping it
    # saves a second attention pass in the backward. The policy is by op type and key count, not by counting
    # calls, so LoRA's extra matmuls cannot shift it.
    seq_dim = _ATTENTION_OPS.get(op)
    if seq_dim is not None and args[1].shape[seq_dim] >= SELECTIVE_MIN_KEYS:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def selective_checkpoint_context():
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    return create_selective_checkpoint_contexts(_save_attention_policy)


class AttentionHandoff:
    """Nested checkpointing: the attention outputs of one block call's self-attention sub-layer, handed from the
    block's recompute to the sub-layer's own recompute. The sub-layer checkpoint made in the forward is the one
    whose recompute the backward runs; the block's recompute re-creates sub-layer checkpoints only to rebuild the
    next sub-layers' inputs (their graphs are discarded), so without the hand-off attention runs three times. Each
    context pair is `checkpoint`'s context_fn: (forward context, recompute context)."""

    def __init__(self) -> None:
        self.outputs: list = []

    def recording(self) -> tuple:
        return _AttentionDispatch(self, record=True), contextlib.nullcontext()

    def replaying(self) -> tuple:
        return contextlib.nullcontext(), _AttentionDispatch(self, record=False)


class _AttentionDispatch(TorchDispatchMode):
    """Below autograd, like selective checkpointing's own modes: a replayed output gets its autograd node (and the
    tensors its backward saves) exactly as a computed one would."""

    def __init__(self, handoff: AttentionHandoff, record: bool) -> None:
        super().__init__()
        self.handoff, self.record = handoff, record

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        return True  # the fused elementwise functions inside compile as usual

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _ATTENTION_OPS:
            return func(*args, **kwargs)
        if not self.record and self.handoff.outputs:
            return self.handoff.outputs.pop(0)
        out = func(*args, **kwargs)
        if self.record:
            self.handoff.outputs.append(out)
        return out


__all__ = ["MiniTrainDIT", "MinimalV1LVGDiT", "Block", "Attention", "RMSNorm"]
