"""Video2World inference benchmark: a whole generation (VAE encode of the conditioning video, the DiT sampling loop of
35 steps with guidance = 36 guided evaluations = 72 net forwards, VAE decode) with the 2B model at 480p and 720p,
random weights, bf16, one GPU; seconds per video and peak memory, beside the reference's published numbers (one
H200 SXM, whole pipeline).

The prompt embeddings are precomputed (one T5-XXL pass over 512 tokens is tens of milliseconds on an H200, and its
weights cannot be fetched here); everything else is the real pipeline, with a full-size Wan2.1 VAE. Weights are
random: speed does not depend on their values.

    python benchmarks/bench_inference.py                 # CUDA: 2B at 480p and 720p
    python benchmarks/bench_inference.py --tiny          # CPU smoke run of the same code path
Writes $OUT/bench_inference.json when OUT is set; the table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.inference.defaults import video_size_hw  # noqa: E402
from cosmos_predict2.inference.pipeline import GenerationTimings, Video2WorldPipeline  # noqa: E402
from cosmos_predict2.networks import attention_backend_for, build_net, set_attention_backend  # noqa: E402
from cosmos_predict2.networks.attention import BACKENDS  # noqa: E402
from cosmos_predict2.networks.neighborhood import (  # noqa: E402
    apply_neighborhood_attention,
    natten_parameters_for,
    neighborhood_kernels_run,
)
from cosmos_predict2.tokenizers import WanVAETokenizer, tiny_vae_config  # noqa: E402

# docs/reference.md §11: the reference, 35 steps with guidance, one H200 SXM: (model, resolution, natten) -> s
REFERENCE_S = {("2B", "480", False): 50.2, ("2B", "720", False): 221.7, ("2B", "720", True): 89.4,
               ("14B", "480", False): 176.2, ("14B", "720", False): 836.9, ("14B", "720", True): 412.9}
REFERENCE_MEMORY_GB = 32.5


def _input_image(size_hw: tuple[int, int], folder: str) -> str:
    from PIL import Image

    h, w = size_hw
    rng = np.random.default_rng(0)
    path = os.path.join(folder, f"input_{h}x{w}.png")
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def run_case(pipe: Video2WorldPipeline, size_hw: tuple[int, int], num_frames: int, emb_dim: int, num_steps: int,
             guidance: float) -> dict:
    device = pipe.device
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 512, emb_dim, generator=g)
    uncond = torch.randn(1, 512, emb_dim, generator=g)
    with tempfile.TemporaryDirectory() as folder:
        image = _input_image(size_hw, folder)

        def generate(steps: int, timings: GenerationTimings) -> None:
            pipe.generate(image, size_hw, num_frames, prompt_embedding_1_L_D=cond, negative_embedding_1_L_D=uncond,
                          guidance=guidance, seed=0, num_steps=steps, timings=timings)

        generate(1, GenerationTimings())  # warm-up: kernels, cuDNN plans and algorithm search, allocator
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        timings = GenerationTimings()
        generate(num_steps, timings)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    return {"seconds": timings.total_s, "sample_s": timings.sample_s, "vae_encode_s": timings.encode_s,
            "vae_decode_s": timings.decode_s, "peak_memory_gb": peak, "net_forwards": timings.net_forwards,
            "seconds_per_forward": timings.sample_s / max(timings.net_forwards, 1)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU smoke mode: tiny net, tiny video, 3 steps")
    p.add_argument("--model_size", default="2B", choices=("2B", "14B"))
    p.add_argument("--resolutions", default="480,720")
    p.add_argument("--num_steps", type=int, default=35)
    p.add_argument("--guidance", type=float, default=7.0)
    p.add_argument("--sequential_guidance", action="store_true", help="two batch-1 forwards instead of one of 2")
    p.add_argument("--no_shared_first_layers", action="store_true",
                   help="run the plain guidance batch (the text-independent first layers computed per branch)")
    p.add_argument("--natten", action="store_true", help="the sparse-attention variant (neighborhood attention)")
    p.add_argument("--attn_backend", default=None, choices=BACKENDS,
                   help="attention kernel (default: best = fa4 where flash-attn-4 is installed, else cudnn)")
    args = p.parse_args(argv)
    if args.attn_backend:
        set_attention_backend(args.attn_backend)

    rows = []
    if args.tiny:
        device = torch.device("cpu")
        net = build_net("tiny", device=device, dtype=torch.float32).eval()
        tokenizer = WanVAETokenizer.from_config(tiny_vae_config(), device=device)
        cases = [("tiny", (32, 64), 9)]
        emb_dim, num_steps, model = 32, min(args.num_steps, 3), "tiny"
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --tiny for the CPU smoke mode")
        from diffusers import AutoencoderKLWan

        device = torch.device("cuda")
        net = build_net(args.model_size, device=device, dtype=torch.bfloat16).eval().requires_grad_(False)
        if args.natten:
            apply_neighborhood_attention(net, natten_parameters_for(args.model_size))
        tokenizer = WanVAETokenizer(AutoencoderKLWan(), device=device)  # full-size Wan2.1 VAE, bf16
        cases = [(res, video_size_hw(res, "16:9"), 93) for res in args.resolutions.split(",")]
        emb_dim, num_steps, model = 1024, args.num_steps, args.model_size
    pipe = Video2WorldPipeline(net, tokenizer, device=device, batched_guidance=not args.sequential_guidance,
                               share_guidance_input=not args.no_shared_first_layers, log=lambda _: None)
    for name, size_hw, num_frames in cases:
        result = run_case(pipe, size_hw, num_frames, emb_dim, num_steps, args.guidance)
        result.update(model=model, resolution=name, size_hw=list(size_hw), num_frames=num_frames,
                      num_steps=num_steps, guidance=args.guidance, batched_guidance=not args.sequential_guidance,
                      shared_first_layers=not args.no_shared_first_layers,
                      attention=attention_backend_for(device, next(net.parameters()).dtype)
                      + (f" + neighborhood ({neighborhood_kernels_run(net)})" if args.natten else ""),
                      device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                      torch=torch.__version__, reference_seconds=REFERENCE_S.get((model, name, args.natten)),
                      scope="whole generation except the T5 pass (precomputed embeddings)")
        rows.append(result)
        print(json.dumps(result), flush=True)

    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "bench_inference.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2))
    variant = f"{model}{' NATTEN' if args.natten else ''}"
    print(f"\nVideo2World inference, {variant}, {num_steps} steps, guidance {args.guidance} "
          f"({'sequential' if args.sequential_guidance else 'batched'} branches); T5 precomputed")
    print(f"{'resolution':>10} {'s/video':>8} {'DiT loop':>9} {'VAE enc':>8} {'VAE dec':>8} {'forwards':>9} "
          f"{'s/forward':>10} {'peak GB':>8} {'reference s':>12}")
    for r in rows:
        ref = f"{r['reference_seconds']:.1f}" if r["reference_seconds"] else "-"
        print(f"{r['resolution']:>10} {r['seconds']:8.2f} {r['sample_s']:9.2f} {r['vae_encode_s']:8.2f} "
              f"{r['vae_decode_s']:8.2f} {r['net_forwards']:9d} {r['seconds_per_forward']:10.3f} "
              f"{r['peak_memory_gb']:8.1f} {ref:>12}")
    if not args.tiny:
        print(f"reference (whole pipeline, H200 SXM): 2B 480p {REFERENCE_S['2B', '480', False]} s, 720p "
              f"{REFERENCE_S['2B', '720', False]} s, {REFERENCE_MEMORY_GB} GB")
        for r in rows:  # fewer steps than the reference's 35: the same loop, per-forward time x its 72 forwards
            if r["num_steps"] != 35:
                full_s = r["vae_encode_s"] + r["vae_decode_s"] + 72 * r["seconds_per_forward"]
                print(f"{r['resolution']}: {r['num_steps']} steps measured, 35 steps extrapolated {full_s:.1f} s")
    return rows


if __name__ == "__main__":
    main()
