"""Training of the demo's tiny Wan2.1 VAE (diffusers `AutoencoderKLWan` with `tiny_vae_config()`).

Used by `scripts.train_demo_vae` (GPU or CPU, by time or by steps) and by `scripts.make_demo_assets`.

Recipe: 17-frame 64x64 clips (the demo's geometry, so every causal-cache path the demo uses is trained) from a
fixed pool drawn once in parallel: "shapes" clips with randomly permuted colour channels (all hues are seen) plus,
optionally, robot clips from their own seed (`robot_fraction`); Adam with a cosine decay to 5% over the budget;
L1 + L2 loss on the decoder output *before* diffusers' [-1, 1] clamp (the clamp has zero gradient where it bites).
The per-frame causal loop of the Wan VAE is launch-bound at this size (~0.3 s per step even on an H200), so on a GPU
a large batch costs little more than a small one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from demo import HEIGHT, NUM_FRAMES, WIDTH
from demo.synthetic import robot_clip, shapes_clip

# Robot clips for VAE training come from their own seed: neither the demo's LoRA training (1) / held-out (2) clips
# nor the robot PSNR evaluation clips (998). A real VAE has seen many kinds of video; the domain shift the demo's
# LoRA must learn lives in the DiT, which is pretrained on shapes only.
VAE_SEED, VAE_ROBOT_SEED = 100, 101


def _clip(index: int, robot: bool = False) -> np.ndarray:
    if robot:
        return robot_clip(VAE_ROBOT_SEED, index, num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH).frames
    frames = shapes_clip(VAE_SEED, index, num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH).frames
    return frames[..., np.random.default_rng([VAE_SEED, index, 7]).permutation(3)]  # colour variety


def clip_pool(n: int, workers: int = 1, robot_fraction: float = 0.0) -> torch.Tensor:
    """uint8 [n, 3, T, H, W]: the first n*(1-robot_fraction) are shapes clips, the rest robot clips."""
    n_robot = round(n * robot_fraction)
    kinds = [False] * (n - n_robot) + [True] * n_robot
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            clips = list(ex.map(_clip, range(n), kinds, chunksize=16))
    else:
        clips = [_clip(i, k) for i, k in zip(range(n), kinds)]
    return torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).contiguous()


def decode_unclamped(vae, z_B_C_T_H_W: torch.Tensor) -> torch.Tensor:
    """diffusers' AutoencoderKLWan._decode without the final clamp (same causal per-frame loop)."""
    vae.clear_cache()
    x = vae.post_quant_conv(z_B_C_T_H_W)
    outs = []
    for i in range(x.shape[2]):
        vae._conv_idx = [0]
        outs.append(vae.decoder(x[:, :, i : i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                first_chunk=i == 0))  # fmt: skip
    vae.clear_cache()
    return torch.cat(outs, dim=2)


def train_vae(
    steps: int | None = None,
    seconds: float | None = None,
    device: str | torch.device = "cpu",
    pool: int = 1024,
    batch: int = 16,
    lr: float = 1e-3,
    robot_fraction: float = 0.0,
    workers: int = 1,
    init_from: Path | None = None,
    save_path: Path | None = None,
    save_every: int = 200,
    log: Callable[[str], None] = print,
):
    """Train for `steps` optimiser steps and/or `seconds` (whichever ends first; steps alone is deterministic).
    Returns the model in eval mode on the CPU (latent statistics not yet folded). With `save_path`, the weights
    are written every `save_every` steps and at the end (a stopped run continues with `init_from`)."""
    from diffusers import AutoencoderKLWan
    from safetensors.torch import load_file, save_file

    from cosmos_predict2.tokenizers import tiny_vae_config

    if steps is None and seconds is None:
        raise ValueError("give steps, seconds or both")
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**tiny_vae_config())
    if init_from is not None:
        vae.load_state_dict(load_file(str(init_from)))
        log(f"VAE weights from {init_from}")

    def save() -> None:
        if save_path is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}, str(save_path))

    if steps == 0:
        return vae.eval()
    t0 = time.perf_counter()
    clips = clip_pool(pool, workers, robot_fraction)
    log(f"VAE: {pool} training clips ({robot_fraction:.0%} robot) drawn in {time.perf_counter() - t0:.0f} s")
    vae = vae.to(device).train()
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    start, step = time.perf_counter(), 0
    while True:
        elapsed = time.perf_counter() - start
        progress = max(step / steps if steps else 0.0, elapsed / seconds if seconds else 0.0)
        if progress >= 1:
            break
        for group in opt.param_groups:  # cosine over the budget, down to 5%
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        x = clips[torch.randint(0, len(clips), (batch,), generator=g)].to(device).float() / 127.5 - 1
        rec = decode_unclamped(vae, vae.encode(x).latent_dist.mean)
        loss = (rec - x).abs().mean() + (rec - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 or step == 1:
            log(f"vae step {step} loss {loss.item():.4f} ({elapsed:.0f} s)")
        if step % save_every == 0:
            save()
    save()
    log(f"VAE: {step} steps in {time.perf_counter() - start:.0f} s")
    return vae.cpu().eval()
