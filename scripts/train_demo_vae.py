"""Train the demo's tiny Wan2.1 VAE (diffusers AutoencoderKLWan, `tiny_vae_config()`) on synthetic shapes clips.

On a CPU this takes hours to reconstruct recognisably; on one GPU a few minutes. The result is a safetensors state
dict that `python -m scripts.make_demo_assets --vae_from FILE --vae_steps 0` folds into assets/demo/tiny_vae.

    python -m scripts.train_demo_vae --out vae.safetensors --seconds 120 [--device cuda]

Recipe: 17-frame 64x64 clips (the demo's geometry, so every causal-cache path the demo uses is trained), a fixed
pool of clips drawn once in parallel, batch 16, Adam 1e-3 with cosine decay over the time budget, L1 + L2 loss on the
decoder output *before* diffusers' [-1, 1] clamp (the clamp has zero gradient where it bites).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.demo import HEIGHT, NUM_FRAMES, WIDTH  # noqa: E402
from cosmos_predict2.demo.synthetic import robot_clip, shapes_clip  # noqa: E402

# Robot clips for VAE training come from their own seed: neither the demo's LoRA training (1) / held-out (2) clips
# nor the robot PSNR evaluation clips (998). A real VAE has seen many kinds of video; the domain shift the demo's
# LoRA must learn lives in the DiT, which is pretrained on shapes only.
VAE_SEED, VAE_ROBOT_SEED, ROBOT_EVAL_SEED = 100, 101, 998


def _clip(index: int, robot: bool = False) -> np.ndarray:
    if robot:
        return robot_clip(VAE_ROBOT_SEED, index, num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH).frames
    frames = shapes_clip(VAE_SEED, index, num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH).frames
    return frames[..., np.random.default_rng([VAE_SEED, index, 7]).permutation(3)]  # colour variety


def clip_pool(n: int, workers: int, robot_fraction: float = 0.0) -> torch.Tensor:
    n_robot = round(n * robot_fraction)
    kinds = [False] * (n - n_robot) + [True] * n_robot
    with ProcessPoolExecutor(workers) as ex:
        clips = list(ex.map(_clip, range(n), kinds, chunksize=16))
    return torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).contiguous()  # uint8 [N, 3, T, H, W]


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


@torch.no_grad()
def robot_psnr(vae, device: torch.device, n: int = 8) -> float:
    vae.eval()
    values = []
    for i in range(n):
        frames = robot_clip(ROBOT_EVAL_SEED, i).frames
        x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float().to(device) / 127.5 - 1
        rec = decode_unclamped(vae, vae.encode(x).latent_dist.mean).clamp(-1, 1)
        values.append(10 * math.log10(4.0 / ((rec - x) ** 2).mean().item()))
    vae.train()
    return float(np.mean(values))


def main(argv: list[str] | None = None) -> int:
    from diffusers import AutoencoderKLWan
    from safetensors.torch import save_file

    from cosmos_predict2.tokenizers import tiny_vae_config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=120.0, help="training time budget")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--pool", type=int, default=1024, help="number of distinct training clips")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--init", type=Path, default=None, help="continue from this state dict (safetensors)")
    p.add_argument("--robot_fraction", type=float, default=0.0,
                   help="share of the pool that is robot clips (their own seed, never the evaluation clips)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    t0 = time.perf_counter()
    pool = clip_pool(args.pool, args.workers, args.robot_fraction)
    print(f"{args.pool} clips drawn in {time.perf_counter() - t0:.0f} s", flush=True)
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**tiny_vae_config())
    if args.init is not None:
        from safetensors.torch import load_file

        vae.load_state_dict(load_file(str(args.init)))
    vae = vae.to(device).train()
    opt = torch.optim.Adam(vae.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(0)
    start, step = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < args.seconds:
        for group in opt.param_groups:  # cosine over the time budget, down to 5%
            group["lr"] = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(elapsed / args.seconds, 1))))
        idx = torch.randint(0, len(pool), (args.batch,), generator=g)
        x = pool[idx].to(device).float() / 127.5 - 1
        rec = decode_unclamped(vae, vae.encode(x).latent_dist.mean)
        loss = (rec - x).abs().mean() + (rec - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0:
            print(f"step {step} loss {loss.item():.4f} ({elapsed:.0f} s)", flush=True)
        if step % 1000 == 0:
            save_file({k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}, str(args.out))
    save_file({k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}, str(args.out))
    print(f"{step} steps in {time.perf_counter() - start:.0f} s; robot PSNR {robot_psnr(vae, device):.2f} dB "
          f"(never seen); wrote {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
