"""Where a 2B or 14B Video2World forward spends its time on the GPU, and what the rest of the pipeline (the VAE)
costs.

One H200, random weights, bf16, 93 frames. Reports:
- forward seconds at the given resolution for batch 1, the plain guidance batch of 2, and the guidance batch of 2
  with the text-independent first layers shared (`shared_input_repeats=2`);
- a torch.profiler breakdown of one shared guidance forward by kernel class (attention, matmul, fused
  elementwise, other) and the top kernels;
- bf16 matmul TFLOP/s at the DiT's shapes (the ceiling the non-attention part is held to);
- the Wan2.1 VAE (diffusers AutoencoderKLWan, full size) encode of the 93-frame input and decode of 24 latent
  frames, which the reference's whole-pipeline number includes;
- the GPU's power limit and clocks (an H200 SXM runs at up to 700 W).

    python benchmarks/profile_forward.py --resolution 720                    # CUDA; JSON to $OUT/profile_forward.json
    python benchmarks/profile_forward.py --model_size 14B --resolution 480   # JSON to $OUT/profile_forward_14b.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_network import RESOLUTIONS, model_flops_forward, timed  # noqa: E402
from benchmarks.profiling import print_profile, profile_call  # noqa: E402
from cosmos_predict2.networks import build_net  # noqa: E402
from cosmos_predict2.networks.weights import randomize_  # noqa: E402


def gpu_info() -> dict:
    query = "name,power.limit,power.max_limit,clocks.max.sm,clocks.sm,clocks.max.mem,temperature.gpu"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        out = "unavailable"
    return {"nvidia_smi": dict(zip(query.split(","), (v.strip() for v in out.split(",")))),
            "cudnn": torch.backends.cudnn.version(), "torch": torch.__version__}


def matmul_tflops(M: int, K: int, N: int) -> float:
    a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(K, N, device="cuda", dtype=torch.bfloat16)
    sec, _ = timed(lambda: a @ b, 3, 10, torch.device("cuda"))
    return 2 * M * K * N / sec / 1e12


def vae_seconds(h: int, w: int, reps: int = 2) -> dict:
    from diffusers import AutoencoderKLWan

    from cosmos_predict2.tokenizers import WanVAETokenizer

    tok = WanVAETokenizer(AutoencoderKLWan().eval(), device=torch.device("cuda"))
    video = torch.zeros(1, 3, 93, h, w, dtype=torch.uint8)
    video[:, :, :1] = 128
    out = {}
    with torch.inference_mode():
        for _ in range(reps):  # the first run includes cuDNN's algorithm search
            torch.cuda.synchronize()
            start, mid, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
            start.record()
            z = tok.encode(video)
            mid.record()
            tok.decode(z)
            end.record()
            torch.cuda.synchronize()
            out = {"encode_s": start.elapsed_time(mid) / 1e3, "decode_s": mid.elapsed_time(end) / 1e3,
                   "latent_shape": list(z.shape), "peak_gb": torch.cuda.max_memory_allocated() / 1e9}
    del tok
    torch.cuda.empty_cache()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_size", default="2B", choices=("2B", "14B"))
    p.add_argument("--resolution", default="720", choices=("480", "720"))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--skip_vae", action="store_true")
    args = p.parse_args()
    device = torch.device("cuda")
    report: dict = {"gpu": gpu_info(), "model_size": args.model_size, "resolution": args.resolution}

    net = build_net(args.model_size, device=device, dtype=torch.bfloat16).eval().requires_grad_(False)
    randomize_(net)
    T, H, W = RESOLUTIONS[f"{args.resolution}p"]
    g = torch.Generator(device=device).manual_seed(0)
    x1 = torch.randn(1, 16, T, H, W, device=device, dtype=torch.bfloat16, generator=g)
    t1 = torch.rand(1, T, device=device, generator=g)
    ctx2 = torch.randn(2, 512, 1024, device=device, dtype=torch.bfloat16, generator=g)
    cond1 = torch.zeros(1, 1, T, H, W, device=device, dtype=torch.bfloat16)
    cond1[:, :, :1] = 1
    pad = torch.zeros(1, 1, H * 8, W * 8, device=device, dtype=torch.bfloat16)
    x2, t2, cond2 = x1.repeat(2, 1, 1, 1, 1), t1.repeat(2, 1), cond1.repeat(2, 1, 1, 1, 1)

    cases = {
        "batch 1": lambda: net(x1, t1, ctx2[:1], cond1, padding_mask=pad),
        "guidance batch 2": lambda: net(x2, t2, ctx2, cond2, padding_mask=pad),
        "guidance batch 2, shared first layers": lambda: net(x2, t2, ctx2, cond2, padding_mask=pad,
                                                             shared_input_repeats=2),
    }
    flops1 = model_flops_forward(net, T, H, W)
    forwards = {}
    with torch.inference_mode():
        plain = cases["guidance batch 2"]()
        shared = cases["guidance batch 2, shared first layers"]()
        report["shared_vs_plain_max_rel_diff"] = ((shared - plain).abs().max() / plain.abs().max()).item()
        del plain, shared
        for name, fn in cases.items():
            sec, peak = timed(fn, 1, args.reps, device)
            samples = 1 if name == "batch 1" else 2
            forwards[name] = {"seconds": sec, "seconds_per_sample": sec / samples, "peak_gib": peak,
                              "tflops_per_s": samples * flops1 / sec / 1e12}
        profiled = profile_call(cases["guidance batch 2, shared first layers"])
    report["forwards"] = forwards
    report["profile_by_class_s"] = profiled["by_class_s"]
    report["profile_top_kernels"] = profiled["top_kernels"]
    L, D = T * (H // 2) * (W // 2), net.model_channels
    report["matmul_tflops"] = {
        f"[{2 * L}x{D}]x[{D}x{D}]": matmul_tflops(2 * L, D, D),
        f"[{2 * L}x{D}]x[{D}x{4 * D}]": matmul_tflops(2 * L, D, 4 * D),
        f"[{2 * L}x{4 * D}]x[{4 * D}x{D}]": matmul_tflops(2 * L, 4 * D, D),
    }
    cases.clear()
    net = None  # free the DiT before the VAE
    torch.cuda.empty_cache()
    if not args.skip_vae:
        h, w = {"480": (480, 832), "720": (704, 1280)}[args.resolution]
        report["vae"] = vae_seconds(h, w)

    if os.environ.get("OUT"):
        name = "profile_forward.json" if args.model_size == "2B" else f"profile_forward_{args.model_size.lower()}.json"
        Path(os.environ["OUT"], name).write_text(json.dumps(report, indent=2))
    print(json.dumps(report["gpu"]))
    print_profile(profiled, "one shared guidance forward")
    print("matmul TFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in report["matmul_tflops"].items()))
    if "vae" in report:
        vae = report["vae"]
        print(f"VAE {args.resolution}p: encode {vae['encode_s']:.2f} s, decode {vae['decode_s']:.2f} s")
    print(f"shared vs plain max rel diff: {report['shared_vs_plain_max_rel_diff']:.2e}")
    title = f"{args.model_size} {args.resolution}p forward"
    print(f"\n{title:<40} {'s':>7} {'s/sample':>9} {'TFLOP/s':>8} {'peak GiB':>9}")
    for name, r in forwards.items():
        print(f"{name:<40} {r['seconds']:7.3f} {r['seconds_per_sample']:9.3f} {r['tflops_per_s']:8.0f} "
              f"{r['peak_gib']:9.1f}")


if __name__ == "__main__":
    main()
