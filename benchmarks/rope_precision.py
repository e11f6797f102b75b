"""How much do bf16 RoPE angles (the reference's run-time behaviour) change the DiT's output vs exact fp32 angles?

Runs on CPU: a network with the 2B model's head size (128) and RoPE ratios but 2 narrow blocks, random weights,
on the 720p token grid (44 x 80 tokens per frame) with 2 latent frames, in fp32 so only the angles differ.

    python benchmarks/rope_precision.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.networks import build_net  # noqa: E402
from cosmos_predict2.networks.weights import randomize_  # noqa: E402

SHAPE = dict(model_channels=256, num_heads=2, num_blocks=2, adaln_lora_dim=32)


def main() -> None:
    print(f"{'grid':10} {'max angle err (rad)':>20} {'output rel. diff':>17}")
    for name, (T, H, W) in {"480p": (2, 54, 96), "720p": (2, 88, 160)}.items():
        nets = [randomize_(build_net("2B", rope_angles_dtype=dt, **SHAPE), seed=0).eval()
                for dt in ("float32", "bfloat16")]  # fmt: skip
        g = torch.Generator().manual_seed(0)
        x, t, ctx = torch.randn(1, 16, T, H, W, generator=g), torch.rand(1, T, generator=g), torch.randn(1, 8, 1024)
        with torch.no_grad():
            a, b = (net(x, t, ctx) for net in nets)
        ang = [net.pos_embedder.angles(T, H // 2, W // 2, torch.device("cpu")) for net in nets]
        print(f"{name:10} {(ang[0] - ang[1]).abs().max().item():20.4f} {((a - b).norm() / a.norm()).item():17.2e}")


if __name__ == "__main__":
    main()
