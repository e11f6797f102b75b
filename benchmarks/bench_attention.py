"""Attention kernels at the DiT's shapes (2B: 16 heads x 128): time, TFLOP/s and error against fp32.

Shapes: one guidance forward (batch 2) at 480p (31,104 tokens) and 720p (84,480 tokens), and a 720p training
step's forward + backward (batch 1). Kernels: our `attention` under each backend that runs here ("fa4" needs
`pip install flash-attn-4`; see cosmos_predict2/networks/attention.py). Errors are the largest absolute
difference to an fp32 computation of the first 256 queries (for fwd+bwd: of the three input gradients, to cuDNN's).

    python benchmarks/bench_attention.py        # CUDA only; JSON to $OUT/bench_attention.json
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_network import timed  # noqa: E402
from cosmos_predict2.networks import attention as attn  # noqa: E402

HEADS, HEAD_DIM = 16, 128
FORWARD_SHAPES = {"480p guidance fwd": (2, 31104), "720p guidance fwd": (2, 84480)}
TRAIN_SHAPE = ("720p train fwd+bwd", (1, 84480))


def random_qkv(batch: int, tokens: int, seed: int, grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(batch, tokens, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16, generator=g)
            .requires_grad_(grad) for _ in range(3)]


def main() -> list[dict]:
    if not torch.cuda.is_available():
        raise SystemExit("CUDA only")
    backends = ["cudnn", "flash"] + (["fa4"] if attn._fa4_function() is not None else [])
    rows = []
    for shape, (batch, tokens) in FORWARD_SHAPES.items():
        q, k, v = random_qkv(batch, tokens, seed=0)
        flops = 4 * batch * HEADS * tokens * tokens * HEAD_DIM
        q256, k32, v32 = (t.float().transpose(1, 2) for t in (q[:, :256], k, v))
        ref = F.scaled_dot_product_attention(q256, k32, v32).transpose(1, 2)
        del k32, v32
        for name in backends:
            attn.set_attention_backend(name)
            out = attn.attention(q, k, v)
            seconds, _ = timed(lambda q=q, k=k, v=v: attn.attention(q, k, v), warmup=1, reps=8, device=q.device)
            rows.append({"shape": shape, "backend": name, "seconds": seconds, "tflops": flops / seconds / 1e12,
                         "max_error": (out[:, :256].float() - ref).abs().max().item()})
            print(json.dumps(rows[-1]), flush=True)
        del q, k, v, ref

    shape, (batch, tokens) = TRAIN_SHAPE
    q, k, v = random_qkv(batch, tokens, seed=1, grad=True)
    grad_out = random_qkv(batch, tokens, seed=2)[0]
    flops = 3.5 * 4 * batch * HEADS * tokens * tokens * HEAD_DIM  # backward = 2.5 forwards

    def step() -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(attn.attention(q, k, v), (q, k, v), grad_out)

    attn.set_attention_backend("cudnn")
    cudnn_grads = step()
    for name in [b for b in backends if b != "flash"]:  # PyTorch's flash backend is half as fast already forward
        attn.set_attention_backend(name)
        grads = step()
        seconds, _ = timed(step, warmup=1, reps=4, device=q.device)
        rows.append({"shape": shape, "backend": name, "seconds": seconds, "tflops": flops / seconds / 1e12,
                     "max_error": max((a.float() - b.float()).abs().max().item() for a, b in zip(grads, cudnn_grads))})
        print(json.dumps(rows[-1]), flush=True)

    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_attention.json").write_text(json.dumps(
            {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
             "rows": rows}, indent=1))
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    print(f"{'shape':20} {'backend':8} {'ms':>8} {'TFLOP/s':>8} {'vs cudnn':>9} {'max error':>10}")
    for r in rows:
        base = next(x["seconds"] for x in rows if x["shape"] == r["shape"] and x["backend"] == "cudnn")
        print(f"{r['shape']:20} {r['backend']:8} {r['seconds'] * 1e3:8.1f} {r['tflops']:8.0f} "
              f"{base / r['seconds']:8.2f}x {r['max_error']:10.2e}")
    return rows


if __name__ == "__main__":
    main()
