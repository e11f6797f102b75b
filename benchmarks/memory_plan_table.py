"""docs/memory.md's "which GPU can train what" table from the planner (cosmos_predict2/training/memory_plan.py),
with the measured rows (memory_plan.MEASURED) marked: the fastest memory mode and checkpointing predicted to fit
each GPU, for 2B r16 / 14B r32 LoRA at 480p / 720p, batch 1, 93 frames, a machine with --host_gib of memory.

    python benchmarks/memory_plan_table.py --host_gib 128
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.training.memory_plan import LATENT_480P, LATENT_720P, MEASURED, NetCounts, choose, plan  # noqa: E402
from cosmos_predict2.training.model import Video2WorldModel, model_config_dict  # noqa: E402

# name, usable GiB (the card's memory as PyTorch reports it)
GPUS = [("24 GB (RTX 4090, L4)", 22.3), ("40 GB (A100 40GB)", 39.4), ("48 GB (L40S, RTX 6000 Ada)", 44.4),
        ("80 GB (A100 / H100 80GB)", 79.1), ("141 GB (H200)", 139.8)]  # fmt: skip
CASES = [("2B", 16, LATENT_480P, "480p"), ("2B", 16, LATENT_720P, "720p"), ("14B", 32, LATENT_480P, "480p"),
         ("14B", 32, LATENT_720P, "720p")]  # fmt: skip


@functools.cache
def counts(size: str, rank: int) -> NetCounts:
    cfg = model_config_dict(model_size=size, dit_path="", train_architecture="lora", lora_rank=rank, lora_alpha=rank,
                            lora_target_modules="q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2")  # fmt: skip
    return NetCounts.of(Video2WorldModel(cfg).meta_net_with_adapters())


def cell(size: str, rank: int, latent, gpu_gib: float, host_gib: float) -> str:
    rows = plan(counts(size, rank), latent, gpu_memory_gib=gpu_gib, host_memory_gib=host_gib)
    chosen = choose(rows, gpu_gib, host_gib)
    if chosen is None:
        smallest = min(rows, key=lambda p: p.peak_gib)
        return f"does not fit ({smallest.memory_mode} + {smallest.checkpointing}: {smallest.peak_gib:.1f} GiB)"
    text = f"{chosen.memory_mode} + {chosen.label}: {chosen.peak_gib:.1f} GiB, {chosen.s_per_step:.1f} s"
    text += f", host {chosen.host_gib:.0f} GiB" if chosen.host_gib else ""
    for m_size, m_rank, m_latent, ckpt, mode, seconds, peak in MEASURED:
        if (m_size, m_rank, m_latent, ckpt, mode) == (size, rank, latent, chosen.label, chosen.memory_mode):
            measured = ", ".join(([f"{peak:.1f} GiB"] if peak else []) + ([f"{seconds:.2f} s"] if seconds else []))
            text += f" (**measured**: {measured})"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host_gib", type=float, default=128.0)
    args = ap.parse_args()
    print("| GPU | " + " | ".join(f"{size} r{rank} {res}" for size, rank, _, res in CASES) + " |")
    print("|---" * (len(CASES) + 1) + "|")
    for name, gib in GPUS:
        cells = [cell(size, rank, latent, gib, args.host_gib) for size, rank, latent, _ in CASES]
        print(f"| {name}; {gib} GiB | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
