"""Neighborhood attention (the NATTEN variants' self-attention) against dense attention at 720p, one GPU.

For each distinct layer kind of the 2B (or 14B) sparse variant: forward time at the 720p token grid (24, 44, 80) and
the kernel that runs; then the sum over the model's layers against dense attention in every layer, i.e. the
self-attention share of a generation step. bf16, head dim 128, batch 2 (a guidance batch).

    python benchmarks/bench_natten.py [--model_size 14B]
Writes $OUT/bench_natten.json when OUT is set; the table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_network import timed  # noqa: E402
from cosmos_predict2.networks import attention_backend_for, net_config  # noqa: E402
from cosmos_predict2.networks.attention import attention  # noqa: E402
from cosmos_predict2.networks.neighborhood import NeighborhoodAttention, natten_parameters_for  # noqa: E402

GRID_720P = (24, 44, 80)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_size", default="2B", choices=("2B", "14B"))
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    heads = net_config(args.model_size)["num_heads"]
    L = GRID_720P[0] * GRID_720P[1] * GRID_720P[2]
    q, k, v = (torch.randn(args.batch, L, heads, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    dev = q.device
    with torch.no_grad():
        dense_s = timed(lambda: attention(q, k, v), 2, 5, dev)[0]
    table = natten_parameters_for(args.model_size)
    kinds: dict[str, dict] = {}
    for params in table:
        key = repr(params)
        if params is None or key in kinds:
            continue
        layer = NeighborhoodAttention(params)
        window, stride, dilation = layer.params.resolve(GRID_720P)
        with torch.no_grad():
            seconds = timed(lambda layer=layer: layer(q, k, v, video_size=GRID_720P), 2, 5, dev)[0]
        kinds[key] = {"params": params, "window": window, "stride": stride, "dilation": dilation,
                      "kernel": layer.kernel(GRID_720P, q), "seconds": seconds,
                      "speedup_vs_dense": dense_s / seconds,
                      "layers": sum(1 for t in table if repr(t) == key)}
    sparse_total = sum(kinds[repr(t)]["seconds"] if t is not None else dense_s for t in table)
    result = {"model": args.model_size, "grid": GRID_720P, "batch": args.batch, "heads": heads,
              "dense_kernel": attention_backend_for(q.device, q.dtype), "dense_seconds": dense_s,
              "kinds": list(kinds.values()), "dense_total_s": dense_s * len(table), "sparse_total_s": sparse_total,
              "device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], f"bench_natten_{args.model_size}.json").write_text(json.dumps(result, indent=2))
    print(f"\nself-attention forward at 720p {GRID_720P}, {args.model_size}, batch {args.batch}, bf16; dense "
          f"{result['dense_kernel']} {dense_s * 1e3:.1f} ms per layer")
    print(f"{'window':>14} {'stride':>10} {'dilation':>10} {'kernel':>16} {'layers':>6} {'ms':>8} {'x dense':>8}")
    for r in kinds.values():
        print(f"{str(r['window']):>14} {str(r['stride']):>10} {str(r['dilation']):>10} {r['kernel']:>16} "
              f"{r['layers']:6d} {r['seconds'] * 1e3:8.1f} {r['speedup_vs_dense']:8.2f}")
    print(f"all {len(table)} self-attention layers: dense {result['dense_total_s']:.3f} s, sparse "
          f"{sparse_total:.3f} s ({result['dense_total_s'] / sparse_total:.2f}x)")
    return result


if __name__ == "__main__":
    main()
