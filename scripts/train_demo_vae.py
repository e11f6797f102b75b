"""Train the demo's tiny Wan2.1 VAE (recipe: demo/vae_training.py) and write its state dict.

On 2 CPU cores a step takes ~0.8 s (batch 16); on a GPU ~0.3 s at any batch up to 64, so the shipped VAE was made on
one H200 (assets/demo/README.md has the exact commands). Fold the result into assets/demo with
`python -m scripts.make_demo_assets --vae_from FILE --vae_steps 0`, which also redoes the DiT pretraining.

    python -m scripts.train_demo_vae --out vae.safetensors --seconds 420 --device cuda --batch 64 --robot_fraction 0.25
    python -m scripts.train_demo_vae --out vae.safetensors --steps 200             # CPU, deterministic
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from cosmos_predict2.tokenizers import WanVAETokenizer
    from demo.assets import ROBOT_EVAL_SEED, vae_psnr
    from demo.synthetic import robot_clip
    from demo.vae_training import train_vae

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="safetensors state dict to write")
    p.add_argument("--seconds", type=float, default=None, help="training time budget")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (deterministic on CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--pool", type=int, default=1024, help="number of distinct training clips")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=8, help="processes drawing the clip pool")
    p.add_argument("--init", type=Path, default=None, help="continue from this state dict (safetensors)")
    p.add_argument("--robot_fraction", type=float, default=0.0,
                   help="share of the pool that is robot clips (their own seed, never the evaluation clips)")
    args = p.parse_args(argv)
    if args.seconds is None and args.steps is None:
        p.error("give --seconds and/or --steps")

    vae = train_vae(steps=args.steps, seconds=args.seconds, device=args.device, pool=args.pool, batch=args.batch,
                    lr=args.lr, robot_fraction=args.robot_fraction, workers=args.workers, init_from=args.init,
                    save_path=args.out, log=lambda m: print(m, flush=True))  # fmt: skip
    tok = WanVAETokenizer(vae, device="cpu")
    value = vae_psnr(tok, [robot_clip(ROBOT_EVAL_SEED, i).frames for i in range(8)])
    print(f"robot PSNR {value:.2f} dB on evaluation clips it never saw; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
