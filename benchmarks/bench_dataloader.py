"""Data-loader throughput: 93-frame 720p windows decoded from H.264, and cached-latent loading.

    python benchmarks/bench_dataloader.py [--samples 8] [--workers 0 2] [--keep DIR]

Writes a synthetic 1280x720 H.264 clip, then measures (1) `Dataset` samples/s per worker for 93-frame windows
resized/cropped to 704x1280 and (2) `CachedLatentDataset` loading of [16, 24, 88, 160] latents. Runs on CPU.
Target: the loader must never bottleneck a 2B 720p step (~11 s/sample); cached latents well under 0.1 s/sample.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.data import CachedLatentDataset, Dataset, build_latent_cache, write_video  # noqa: E402
from cosmos_predict2.text import save_embedding_pickle  # noqa: E402

NUM_FRAMES, SIZE_HW = 93, (704, 1280)


def write_synthetic_dataset(root: Path, num_clips: int, clip_frames: int) -> None:
    """Moving gradients + noise (so H.264 has real work to do), 16 fps, keyframe every 16 frames."""
    for sub in ("videos", "metas", "t5_xxl"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:720, 0:1280]
    base = rng.integers(0, 40, (720, 1280, 3), dtype=np.uint8)
    frames = np.empty((clip_frames, 720, 1280, 3), np.uint8)
    for t in range(clip_frames):
        frames[t, ..., 0] = (xx + 8 * t) % 256
        frames[t, ..., 1] = (yy + 4 * t) % 256
        frames[t, ..., 2] = ((xx + yy) // 4 + t) % 256
        frames[t] = frames[t] // 2 + base
    for i in range(num_clips):
        write_video(root / "videos" / f"clip{i}.mp4", frames, fps=16)
        (root / "metas" / f"clip{i}.txt").write_text("A synthetic benchmark clip.")
        save_embedding_pickle(root / "t5_xxl" / f"clip{i}.pickle", rng.standard_normal((20, 1024)))


class _LatentShapedEncoder:
    """Stands in for the VAE (not what is measured): returns latents of the real 720p shape [1, 16, 24, 88, 160]."""

    identity = "benchmark-random"

    def encode(self, video_B_3_T_H_W: torch.Tensor) -> torch.Tensor:
        t, h, w = 1 + (video_B_3_T_H_W.shape[2] - 1) // 4, video_B_3_T_H_W.shape[3] // 8, video_B_3_T_H_W.shape[4] // 8
        return torch.randn(1, 16, t, h, w)


def time_loader(dataset, num_workers: int, samples: int) -> float:
    """Seconds per sample once workers are up (the first batch, which pays process start-up, is excluded)."""
    loader = DataLoader(dataset, batch_size=1, shuffle=True, num_workers=num_workers, persistent_workers=False)
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    n = 0
    for _ in range(samples):
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            next(it)
        n += 1
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8, help="timed samples per configuration")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--clip_frames", type=int, default=160)
    parser.add_argument("--keep", type=Path, default=None, help="dataset folder to reuse instead of a temp dir")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_dl_"))
    rows = []
    t0 = time.perf_counter()
    if not (root / "videos").is_dir():
        write_synthetic_dataset(root, num_clips=4, clip_frames=args.clip_frames)
    print(f"dataset at {root} (synthetic 1280x720 H.264, {args.clip_frames} frames): {time.perf_counter() - t0:.1f}s")

    video_ds = Dataset(root, NUM_FRAMES, SIZE_HW)
    for workers in args.workers:
        s = time_loader(video_ds, workers, args.samples)
        per_worker = 1 / s / max(workers, 1)
        rows.append((f"video 93f 720p, {workers} worker(s)", s, 1 / s, per_worker))

    build_latent_cache(root, _LatentShapedEncoder(), NUM_FRAMES, SIZE_HW, windows_per_clip=2)
    latent_ds = CachedLatentDataset(root, NUM_FRAMES, SIZE_HW)
    for workers in args.workers:
        s = time_loader(latent_ds, workers, args.samples * 4)
        rows.append((f"cached latents [16,24,88,160], {workers} worker(s)", s, 1 / s, 1 / s / max(workers, 1)))

    print(f"\ntorch threads {torch.get_num_threads()}, timed samples {args.samples} (x4 for latents)")
    print(f"{'configuration':<44} {'s/sample':>9} {'samples/s':>10} {'per worker':>11}")
    for name, s, rate, per_worker in rows:
        print(f"{name:<44} {s:>9.3f} {rate:>10.2f} {per_worker:>11.2f}")


if __name__ == "__main__":
    main()
