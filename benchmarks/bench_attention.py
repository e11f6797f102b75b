"""SDPA kernel ceilings for the DiT's self-attention shapes (2B: 16 heads x 128), per backend and layout.

    python benchmarks/bench_attention.py      # CUDA only; prints TFLOP/s per (tokens, backend, layout)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}


def main() -> None:
    print(f"{'tokens':>7} {'backend':8} {'layout':6} {'ms':>8} {'TFLOP/s':>8}")
    for L in (31104, 84480):
        flops = 4 * L * L * 16 * 128
        for layout in ("bshd", "bhsd"):
            shape = (1, L, 16, 128) if layout == "bshd" else (1, 16, L, 128)
            q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            if layout == "bshd":
                q, k, v = (t.transpose(1, 2) for t in (q, k, v))
            for name, backend in BACKENDS.items():
                with sdpa_kernel([backend]):
                    for _ in range(2):
                        F.scaled_dot_product_attention(q, k, v)
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    for _ in range(5):
                        F.scaled_dot_product_attention(q, k, v)
                    end.record()
                    torch.cuda.synchronize()
                ms = start.elapsed_time(end) / 5
                print(f"{L:7d} {name:8} {layout:6} {ms:8.2f} {flops / ms / 1e9:8.0f}")


if __name__ == "__main__":
    main()
