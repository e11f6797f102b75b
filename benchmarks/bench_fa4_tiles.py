"""FlashAttention-4's sm90 forward at the DiT's generation shapes, per tile configuration (one GPU).

FA4 picks 128 x 128 tiles for head dim 128 on Hopper; FlashAttention-3's C++ kernel uses 128 x 176 when not
causal. This times the forward of a guidance batch (batch 2, bf16, head dim 128) at 2B/14B x 480p/720p token counts
for a few (tile_m, tile_n, P-in-registers) choices and prints TFLOP/s, to see whether a non-default tile pays.

    python benchmarks/bench_fa4_tiles.py
Writes $OUT/bench_fa4_tiles.json when OUT is set; the table is printed last.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_network import timed  # noqa: E402

SHAPES = {"2B 720p": (84480, 16), "2B 480p": (31104, 16), "14B 720p": (84480, 40)}
TILES = [None, (128, 176), (128, 160), (128, 192), (128, 144), (128, 112)]


def main() -> list[dict]:
    from flash_attn.cute.interface import _flash_attn_fwd

    rows = []
    for name, (tokens, heads) in SHAPES.items():
        q, k, v = (torch.randn(2, tokens, heads, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * 2 * heads * tokens * tokens * 128
        reference = _flash_attn_fwd(q, k, v)[0]
        for tile in TILES:
            try:
                def call(tile=tile, q=q, k=k, v=v):
                    return _flash_attn_fwd(q, k, v, tile_mn=tile)

                seconds = timed(call, 1, 3, q.device)[0]
                out = _flash_attn_fwd(q, k, v, tile_mn=tile)[0]
                diff = (out.float() - reference.float()).abs().max().item()
                rows.append({"shape": name, "tile": tile or "default", "ms": seconds * 1e3,
                             "tflops": flops / seconds / 1e12, "max_diff_vs_default": diff})
            except Exception as e:  # a tile the kernel cannot build: recorded, not fatal
                rows.append({"shape": name, "tile": tile or "default", "error": f"{type(e).__name__}: {e}"[:200]})
            print(json.dumps(rows[-1]), flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_fa4_tiles.json").write_text(json.dumps(
            {"rows": rows, "device": torch.cuda.get_device_name(), "torch": torch.__version__}, indent=2))
    print(f"\n{'shape':>9} {'tile':>11} {'ms':>8} {'TFLOP/s':>8}")
    for r in rows:
        print(f"{r['shape']:>9} {str(r['tile']):>11} " + (f"{r['ms']:8.1f} {r['tflops']:8.0f}" if "ms" in r
                                                          else r["error"][:60]))
    return rows


if __name__ == "__main__":
    main()
