"""Named network sizes (docs/reference.md §1) and a builder that can construct them on the meta device."""

from __future__ import annotations

import torch

from cosmos_predict2.networks.dit import MinimalV1LVGDiT

_COMMON = dict(
    max_img_h=240,
    max_img_w=240,
    max_frames=128,
    in_channels=16,
    out_channels=16,
    patch_spatial=2,
    patch_temporal=1,
    concat_padding_mask=True,
    mlp_ratio=4.0,
    crossattn_emb_channels=1024,
    pos_emb_cls="rope3d",
    use_adaln_lora=True,
    adaln_lora_dim=256,
    extra_per_block_abs_pos_emb=False,
    rope_enable_fps_modulation=False,
)

NET_CONFIGS: dict[str, dict] = {
    "2B": dict(
        _COMMON,
        model_channels=2048,
        num_blocks=28,
        num_heads=16,
        rope_h_extrapolation_ratio=3.0,
        rope_w_extrapolation_ratio=3.0,
        rope_t_extrapolation_ratio=1.0,
    ),
    "14B": dict(
        _COMMON,
        model_channels=5120,
        num_blocks=36,
        num_heads=40,
        rope_h_extrapolation_ratio=2.0,
        rope_w_extrapolation_ratio=2.0,
        rope_t_extrapolation_ratio=10.0 / 12.0,
    ),
    # Same architecture, small enough to train on a CPU in seconds (tests, the demo).
    "tiny": dict(
        _COMMON,
        model_channels=64,
        num_blocks=2,
        num_heads=2,
        adaln_lora_dim=16,
        crossattn_emb_channels=32,
        rope_h_extrapolation_ratio=1.0,
        rope_w_extrapolation_ratio=1.0,
        rope_t_extrapolation_ratio=1.0,
    ),
}

EXPECTED_PARAMETERS = {"2B": 1_956_413_440, "14B": 14_265_285_632}


def net_config(name: str, **overrides) -> dict:
    """Constructor keywords of a named size, with overrides (e.g. a different crossattn width)."""
    if name not in NET_CONFIGS:
        raise KeyError(f"unknown network size {name!r}; choose one of {sorted(NET_CONFIGS)}")
    return {**NET_CONFIGS[name], **overrides}


def build_net(
    name_or_kwargs: str | dict,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    **overrides,
) -> MinimalV1LVGDiT:
    """Build the Video2World DiT. `device="meta"` allocates nothing (use before loading weights)."""
    kwargs = net_config(name_or_kwargs, **overrides) if isinstance(name_or_kwargs, str) else {
        **name_or_kwargs, **overrides}
    with torch.device(device):
        net = MinimalV1LVGDiT(**kwargs)
    return net.to(dtype)


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
