"""Video2World DiT speed and memory: ours vs diffusers' CosmosTransformer3DModel (the peer), same run, same inputs.

2B config, random weights, bf16, batch 1, 93 frames (24 latent frames) at 480p (54x96 latent) and 720p (88x160).
Measures: forward (no grad), forward+backward of all weights with activation checkpointing, peak memory and
achieved TFLOP/s (model FLOPs: forward = linear + attention matmuls; forward+backward counted as 3x forward).

    python benchmarks/bench_network.py                 # CUDA, full run; JSON to $OUT/bench_network.json if set
    python benchmarks/bench_network.py --tiny          # CPU smoke check of the script itself
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.networks import build_net, set_attention_backend  # noqa: E402
from cosmos_predict2.networks.weights import diffusers_config, randomize_, to_diffusers_state_dict  # noqa: E402
from testing_support.diffusers_compat import ensure_cosmos_padding_resize  # noqa: E402

RESOLUTIONS = {"480p": (24, 54, 96), "720p": (24, 88, 160)}


def model_flops_forward(net, T: int, H: int, W: int, text_len: int = 512) -> float:
    """Matmul FLOPs of one forward pass (2 per multiply-add)."""
    L = T * (H // 2) * (W // 2)
    D = net.model_channels
    blocks = len(net.blocks)
    d_ff = net.blocks[0].mlp.layer1.out_features
    ctx = net.blocks[0].cross_attn.k_proj.in_features
    per_block = (
        2 * L * D * D * 4  # self-attn q, k, v, out
        + 2 * L * D * D * 2  # cross-attn q, out
        + 2 * text_len * ctx * D * 2  # cross-attn k, v
        + 2 * L * D * d_ff * 2  # MLP
        + 4 * L * L * D  # self-attention QK^T and PV
        + 4 * L * text_len * D  # cross-attention
    )
    return blocks * per_block + 2 * L * D * 72 + 2 * L * D * 64


def timed(fn, warmup: int, reps: int, device: torch.device) -> tuple[float, float]:
    """(median seconds, peak GiB) over reps after warmup; CUDA events on GPU."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def make_peer(net, device, dtype):
    from diffusers import CosmosTransformer3DModel

    ensure_cosmos_padding_resize()
    cfg = {k: v for k, v in diffusers_config(net).items() if not k.startswith("_")}
    with torch.device("meta"):
        peer = CosmosTransformer3DModel(**cfg)
    peer.load_state_dict(to_diffusers_state_dict(net.state_dict()), assign=True)
    return peer.to(device, dtype)


def bench_resolution(net, peer, res, shape, backends, ckpts, device, dtype, warmup, reps, details) -> list[tuple]:
    rows = []
    ctx_dim = net.blocks[0].cross_attn.k_proj.in_features
    T, H, W = shape
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(1, 16, T, H, W, device=device, dtype=dtype, generator=g)
    t = torch.rand(1, T, device=device, generator=g)
    ctx = torch.randn(1, 512, ctx_dim, device=device, dtype=dtype, generator=g)
    cond = torch.zeros(1, 1, T, H, W, device=device, dtype=dtype)
    cond[:, :, :1] = 1
    pad = torch.zeros(1, 1, H * 8, W * 8, device=device, dtype=dtype)
    fwd_flops = model_flops_forward(net, T, H, W)

    def ours_fwd():
        with torch.no_grad():
            net(x, t, ctx, cond, padding_mask=pad)

    for backend in backends:
        set_attention_backend(backend)
        sec, peak = timed(ours_fwd, warmup, reps, device)
        rows.append((res, f"ours fwd ({backend})", sec, peak, fwd_flops / sec / 1e12))
    set_attention_backend("cudnn")

    for ckpt in ckpts:
        net.activation_checkpointing = ckpt

        def ours_step():
            net(x, t, ctx, cond, padding_mask=pad).float().square().mean().backward()
            net.zero_grad(set_to_none=True)

        sec, peak = timed(ours_step, warmup, max(1, reps - 1), device)
        rows.append((res, f"ours fwd+bwd ckpt={ckpt}", sec, peak, 3 * fwd_flops / sec / 1e12))
    net.activation_checkpointing = "none"

    if peer is not None:
        tp = t[:, None, :, None, None]

        def peer_fwd():
            with torch.no_grad():
                peer(x, tp, ctx, condition_mask=cond, padding_mask=pad, return_dict=False)

        with torch.no_grad():  # numerical agreement in bf16 on the same inputs
            a = net(x, t, ctx, cond, padding_mask=pad).float()
            b = peer(x, tp, ctx, condition_mask=cond, padding_mask=pad, return_dict=False)[0].float()
            details[f"{res}_rel_diff_vs_peer_bf16"] = ((a - b).norm() / b.norm()).item()
        sec, peak = timed(peer_fwd, warmup, reps, device)
        rows.append((res, "peer fwd (diffusers)", sec, peak, fwd_flops / sec / 1e12))
        peer.enable_gradient_checkpointing()
        peer.train()

        def peer_step():
            out = peer(x, tp, ctx, condition_mask=cond, padding_mask=pad, return_dict=False)[0]
            out.float().square().mean().backward()
            peer.zero_grad(set_to_none=True)

        sec, peak = timed(peer_step, warmup, max(1, reps - 1), device)
        rows.append((res, "peer fwd+bwd ckpt", sec, peak, 3 * fwd_flops / sec / 1e12))
        peer.disable_gradient_checkpointing()
        peer.eval()
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="CPU smoke check with the tiny config")
    ap.add_argument("--resolutions", default="480p,720p")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--backends", default="cudnn,flash", help="our SDPA backends to time for the forward")
    ap.add_argument("--ckpt", default="selective,full", help="our activation-checkpointing modes to time")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = "tiny" if args.tiny else "2B"
    kwargs = {"crossattn_emb_channels": 32} if args.tiny else {}
    net = build_net(size, device=device, dtype=dtype, **kwargs)
    randomize_(net)  # drawn on the GPU: the 2B weights are filled in seconds
    peer = None if args.no_peer else make_peer(net, device, dtype)
    if peer is not None:
        for m in peer.modules():
            if m.__class__.__name__ == "RMSNorm":
                m.eps = 1e-6
    rows, details = (
        [],
        {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__},
    )
    warmup, reps = (1, args.reps) if device.type == "cuda" else (1, 1)

    for res in args.resolutions.split(","):
        shape = RESOLUTIONS[res] if not args.tiny else (3, 8, 12)
        rows += bench_resolution(
            net, peer, res, shape, args.backends.split(","), args.ckpt.split(","), device, dtype, warmup, reps, details
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()

    details["rows"] = [dict(res=r[0], what=r[1], seconds=r[2], peak_gib=r[3], tflops=r[4]) for r in rows]
    by = {(r[0], r[1]): r[2] for r in rows}
    out_dir = os.environ.get("OUT")
    if out_dir:
        Path(out_dir, "bench_network.json").write_text(json.dumps(details, indent=2))
    print(json.dumps({k: v for k, v in details.items() if k != "rows"}))
    print(f"{'res':5} {'what':28} {'s':>8} {'peak GiB':>9} {'TFLOP/s':>8} {'peer/ours':>9}")
    for res, what, sec, peak, tf in rows:
        peer_key = "peer fwd (diffusers)" if "fwd (" in what else "peer fwd+bwd ckpt"
        ratio = by.get((res, peer_key), float("nan")) / sec
        print(f"{res:5} {what:28} {sec:8.3f} {peak:9.1f} {tf:8.0f} {ratio:9.2f}")


if __name__ == "__main__":
    main()
