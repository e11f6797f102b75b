"""Video2World inference benchmark: the DiT sampling loop (35 steps with guidance = 36 guided evaluations, 72 net
forwards) of the 2B model at 480p and 720p, random weights, bf16, one GPU; seconds per video and peak memory, beside
the reference's published numbers (one H200 SXM, whole pipeline).

T5 and the VAE are excluded (they are not what dominates: one T5 pass and one VAE encode/decode per video);
the table says so. Weights are random: speed does not depend on their values.

    python benchmarks/bench_inference.py                 # CUDA: 2B at 480p and 720p
    python benchmarks/bench_inference.py --tiny          # CPU smoke run of the same code path
Writes $OUT/bench_inference.json when OUT is set; the table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.inference.defaults import video_size_hw  # noqa: E402
from cosmos_predict2.inference.pipeline import GenerationTimings, Video2WorldPipeline  # noqa: E402
from cosmos_predict2.networks import build_net, set_attention_backend  # noqa: E402

REFERENCE_S = {"480": 50.2, "720": 221.7}  # SPEC 11: reference 2B, 35 steps with guidance, one H200 SXM
REFERENCE_MEMORY_GB = 32.5


def run_case(net, device: torch.device, latent_shape: tuple[int, ...], emb_dim: int, num_steps: int,
             guidance: float, batched: bool) -> dict:
    pipe = Video2WorldPipeline(net, tokenizer=None, device=device, batched_guidance=batched, log=lambda _: None)
    g = torch.Generator().manual_seed(0)
    gt = torch.randn(latent_shape, generator=g).to(device)
    cond = torch.randn(1, 512, emb_dim, generator=g).to(device)
    uncond = torch.randn(1, 512, emb_dim, generator=g).to(device)
    with torch.inference_mode():
        pipe.sample_latents(gt, 1, cond, uncond, guidance, 0, 1)  # warm-up: kernels, cuDNN plans, allocator
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        timings = GenerationTimings()
        t0 = time.perf_counter()
        pipe.sample_latents(gt, 1, cond, uncond, guidance, 0, num_steps, timings)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    return {"seconds": seconds, "peak_memory_gb": peak, "net_forwards": timings.net_forwards,
            "seconds_per_forward": seconds / max(timings.net_forwards, 1)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU smoke mode: tiny net, tiny video, 3 steps")
    p.add_argument("--model_size", default="2B", choices=("2B", "14B"))
    p.add_argument("--resolutions", default="480,720")
    p.add_argument("--num_steps", type=int, default=35)
    p.add_argument("--guidance", type=float, default=7.0)
    p.add_argument("--sequential_guidance", action="store_true", help="two batch-1 forwards instead of one of 2")
    p.add_argument("--attn_backend", default=None, help="cudnn (default), flash, efficient, math, auto")
    args = p.parse_args(argv)
    if args.attn_backend:
        set_attention_backend(args.attn_backend)

    rows = []
    if args.tiny:
        device = torch.device("cpu")
        net = build_net("tiny", device=device, dtype=torch.float32).eval()
        cases = [("tiny 64x32", (1, 16, 3, 4, 8))]
        emb_dim, num_steps, model = 32, min(args.num_steps, 3), "tiny"
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --tiny for the CPU smoke mode")
        device = torch.device("cuda")
        net = build_net(args.model_size, device=device, dtype=torch.bfloat16).eval().requires_grad_(False)
        cases = []
        for res in args.resolutions.split(","):
            h, w = video_size_hw(res, "16:9")
            cases.append((res, (1, 16, 24, h // 8, w // 8)))  # 93 frames -> 24 latent frames
        emb_dim, num_steps, model = 1024, args.num_steps, args.model_size
    for name, shape in cases:
        result = run_case(net, device, shape, emb_dim, num_steps, args.guidance, not args.sequential_guidance)
        result.update(model=model, resolution=name, latent_shape=list(shape), num_steps=num_steps,
                      guidance=args.guidance, batched_guidance=not args.sequential_guidance,
                      device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                      torch=torch.__version__, reference_seconds=REFERENCE_S.get(name),
                      scope="DiT sampling loop only (T5, VAE encode/decode excluded)")
        rows.append(result)

    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "bench_inference.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2))
    print(f"\nVideo2World inference, {model}, {num_steps} steps, guidance {args.guidance} "
          f"({'batched' if not args.sequential_guidance else 'sequential'} branches); DiT loop only")
    print(f"{'resolution':>12} {'s/video':>9} {'forwards':>9} {'s/forward':>10} {'peak GB':>8} {'reference s':>12}")
    for r in rows:
        ref = f"{r['reference_seconds']:.1f}" if r["reference_seconds"] else "-"
        print(f"{r['resolution']:>12} {r['seconds']:9.2f} {r['net_forwards']:9d} {r['seconds_per_forward']:10.3f} "
              f"{r['peak_memory_gb']:8.1f} {ref:>12}")
    if not args.tiny:
        print(f"reference (whole pipeline, H200 SXM): 480p {REFERENCE_S['480']} s, 720p {REFERENCE_S['720']} s, "
              f"{REFERENCE_MEMORY_GB} GB")
    return rows


if __name__ == "__main__":
    main()
