"""Wan2.1 VAE tokenizer (docs/reference.md §3) on diffusers' AutoencoderKLWan, with Cosmos latent normalisation."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from cosmos_predict2.io import check_keys, safe_load
from cosmos_predict2.parallel import resolve_device
from cosmos_predict2.tokenizers.wan_keys import VAEKeyError, convert_wan_state_dict

# docs/reference.md §3: per-channel statistics of the posterior mean; z = (mu - mean) / std.
LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]  # fmt: skip
LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
               3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]  # fmt: skip
SPATIAL_COMPRESSION = 8
TEMPORAL_COMPRESSION = 4
DEFAULT_TOKENIZER_PATH = "checkpoints/nvidia/Cosmos-Predict2-2B-Video2World/tokenizer/tokenizer.pth"


def tiny_vae_config() -> dict[str, Any]:
    """A small AutoencoderKLWan config with the real interface (z_dim 16, 8x spatial, 4x temporal) for tests/demo."""
    return {"base_dim": 8, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 1, "attn_scales": [],
            "temperal_downsample": [False, True, True]}  # fmt: skip


def latent_frames(num_pixel_frames: int) -> int:
    """Pixel frames 4k+1 -> latent frames k+1 (93 -> 24, 61 -> 16)."""
    check_frame_count(num_pixel_frames)
    return 1 + (num_pixel_frames - 1) // TEMPORAL_COMPRESSION


def check_frame_count(num_pixel_frames: int) -> None:
    if num_pixel_frames < 1 or (num_pixel_frames - 1) % TEMPORAL_COMPRESSION:
        k = max((num_pixel_frames - 1) // TEMPORAL_COMPRESSION, 0)
        raise ValueError(
            f"the Wan VAE needs 4k+1 frames, got {num_pixel_frames} (the encoder would silently drop frames); "
            f"use {4 * k + 1} or {4 * k + 5}"
        )


def state_dict_identity(state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> str:
    """sha256 over the config and every tensor's name, dtype, shape and bytes: identifies a VAE for latent caches."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _read_pth_state_dict(path: Path) -> dict[str, torch.Tensor]:
    obj = safe_load(path, what="VAE weights")  # docs/reference.md §12: never run pickled code
    for wrapper in ("state_dict", "model"):  # some exports nest the weights one level down
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (Wan2.1 VAE tokenizer.pth)")
    return obj


class WanVAETokenizer:
    """Encode uint8 video to normalised Wan latents and decode back.

    encode(video_B_3_T_H_W) -> latents_B_16_t_h_w with t = 1 + (T-1)//4, h = H/8, w = W/8 (T must be 4k+1).
    decode(latents_B_16_t_h_w) -> float pixels in [-1, 1], [B, 3, T, H, W].
    Runs in bf16 on GPU (fp32 on CPU) by default; `tiled=True` uses diffusers' tiled encode/decode to bound memory.
    """

    def __init__(
        self,
        vae: torch.nn.Module,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        tiled: bool | dict[str, int] = False,
        identity: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        # Identity is computed from the loaded (fp32) weights before any cast, so it is stable across devices.
        self.identity = identity or state_dict_identity(vae.state_dict(), dict(vae.config))
        self.vae = vae.to(device=self.device).eval().requires_grad_(False)
        if next(vae.parameters()).dtype != self.dtype:  # casting to the same dtype makes diffusers warn
            self.vae.to(dtype=self.dtype)
        if tiled:
            # A dict passes tile sizes through (tile_sample_min_height, tile_sample_stride_height, ...).
            self.vae.enable_tiling(**(tiled if isinstance(tiled, dict) else {}))
        z_dim = int(vae.config.z_dim)
        self.mean_C = torch.tensor(LATENTS_MEAN[:z_dim], dtype=torch.float32, device=self.device)
        self.std_C = torch.tensor(LATENTS_STD[:z_dim], dtype=torch.float32, device=self.device)

    @classmethod
    def from_config(cls, config: dict[str, Any], seed: int | None = 0, **kwargs: Any) -> WanVAETokenizer:
        """A randomly initialised VAE (tests, demo, benchmarks)."""
        from diffusers import AutoencoderKLWan

        if seed is not None:
            torch.manual_seed(seed)
        return cls(AutoencoderKLWan(**config), **kwargs)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike = DEFAULT_TOKENIZER_PATH, config: dict[str, Any] | None = None, **kwargs: Any
    ) -> WanVAETokenizer:
        """Load the released `tokenizer.pth` (original Wan key names) or a diffusers-format VAE folder.

        config: AutoencoderKLWan config for a .pth file (default: diffusers' default = the released Wan2.1 VAE).
        """
        path = Path(path)
        if path.is_dir():
            return cls._from_diffusers_folder(path, **kwargs)
        if not path.is_file():
            raise FileNotFoundError(
                f"VAE weights not found at {path}: download the Cosmos-Predict2 checkpoint so that "
                f"tokenizer/tokenizer.pth exists (default {DEFAULT_TOKENIZER_PATH}), or pass a diffusers VAE folder"
            )
        return cls._from_pth(path, config or {}, **kwargs)

    @classmethod
    def _from_diffusers_folder(cls, path: Path, **kwargs: Any) -> WanVAETokenizer:
        from diffusers import AutoencoderKLWan

        sub = path / "vae" if (path / "vae" / "config.json").is_file() else path  # a pipeline folder or a VAE folder
        if not (sub / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no config.json; expected a diffusers AutoencoderKLWan folder")
        return cls(AutoencoderKLWan.from_pretrained(str(sub), torch_dtype=torch.float32), **kwargs)

    @classmethod
    def _from_pth(cls, path: Path, config: dict[str, Any], **kwargs: Any) -> WanVAETokenizer:
        from diffusers import AutoencoderKLWan

        vae = AutoencoderKLWan(**config)
        num_res_blocks = int(vae.config.num_res_blocks)
        state_dict = convert_wan_state_dict(_read_pth_state_dict(path), num_res_blocks, source=str(path))
        check_keys(vae.state_dict(), state_dict, str(path), sep=" ", error=VAEKeyError,
                   what=f"the AutoencoderKLWan config {dict(config) or '(default)'}")
        vae.load_state_dict(state_dict, strict=True)
        return cls(vae, **kwargs)

    def _to_model_input(self, video_B_3_T_H_W: torch.Tensor) -> torch.Tensor:
        if video_B_3_T_H_W.ndim != 5 or video_B_3_T_H_W.shape[1] != 3:
            raise ValueError(f"expected video [B, 3, T, H, W], got {list(video_B_3_T_H_W.shape)}")
        check_frame_count(video_B_3_T_H_W.shape[2])
        h, w = video_B_3_T_H_W.shape[-2:]
        if h % SPATIAL_COMPRESSION or w % SPATIAL_COMPRESSION:
            raise ValueError(f"height and width must be multiples of {SPATIAL_COMPRESSION}, got {h}x{w}")
        x = video_B_3_T_H_W.to(self.device)
        x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()  # docs/reference.md §3: x/127.5 - 1
        return x.to(self.dtype)

    @torch.inference_mode()
    def encode(self, video_B_3_T_H_W: torch.Tensor) -> torch.Tensor:
        """uint8 (or float in [-1, 1]) video -> normalised latents_B_16_t_h_w (float32), from the posterior mean."""
        x_B_3_T_H_W = self._to_model_input(video_B_3_T_H_W)
        mu_B_C_t_h_w = self.vae.encode(x_B_3_T_H_W).latent_dist.mean.float()
        return (mu_B_C_t_h_w - self.mean_C.view(1, -1, 1, 1, 1)) / self.std_C.view(1, -1, 1, 1, 1)

    @torch.inference_mode()
    def decode(self, latents_B_C_t_h_w: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> float32 pixels in [-1, 1], [B, 3, 1 + 4(t-1), 8h, 8w]."""
        z = latents_B_C_t_h_w.to(self.device).float()
        mu = z * self.std_C.view(1, -1, 1, 1, 1) + self.mean_C.view(1, -1, 1, 1, 1)
        return self.vae.decode(mu.to(self.dtype)).sample.float().clamp_(-1, 1)


__all__ = [
    "LATENTS_MEAN",
    "LATENTS_STD",
    "VAEKeyError",
    "WanVAETokenizer",
    "check_frame_count",
    "latent_frames",
    "state_dict_identity",
    "tiny_vae_config",
]
