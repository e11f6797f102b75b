"""Where GPU time goes: one call under torch.profiler, its kernels summed by class and its operators (with their
input shapes) ranked by the kernel time they launched. Shared by profile_forward.py (inference) and
bench_train_step.py --profile (the training step)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch


def kernel_class(name: str) -> str:
    """A kernel's class from its name (cuDNN, FlashAttention-4, cuBLAS, Triton and PyTorch's own kernels)."""
    n = name.lower()
    if n.startswith("memcpy") or n.startswith("memset"):
        return "copy " + ("host to device" if "htod" in n else "device to host" if "dtoh" in n else "on device")
    if any(k in n for k in ("fmha", "sdpa", "flash", "attention", "cudnn_generated")):
        backward = any(k in n for k in ("bwd", "backward", "dgrad", "dq", "dkdv"))
        return "attention backward" if backward else "attention"
    if any(k in n for k in ("gemm", "nvjet", "cutlass", "xmma", "sm90_")):
        return "matmul"
    if "triton" in n:
        return "fused elementwise (triton)"
    if "multi_tensor_apply" in n:
        return "optimizer / EMA (multi-tensor)"
    if "reduce" in n:
        return "reductions"
    if "elementwise" in n or "copy" in n or "fill" in n:
        return "eager elementwise"
    return "other"


def _device_us(evt) -> float:
    return getattr(evt, "self_device_time_total", None) or getattr(evt, "self_cuda_time_total", 0)


def profile_call(fn: Callable[[], object], top: int = 15, top_ops: int = 0) -> dict:
    """Run `fn` once under the profiler. Returns {"by_class_s", "top_kernels": [(name, count, s)], and with
    `top_ops` > 0 "top_ops": [(operator, input shapes, count, s)] by the GPU time of the kernels each launched}."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=top_ops > 0) as prof:
        fn()
        torch.cuda.synchronize()
    by_class: dict[str, float] = defaultdict(float)
    kernels = []
    for evt in prof.key_averages():
        if evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)
        if us <= 0:
            continue
        by_class[kernel_class(evt.key)] += us / 1e6
        kernels.append((evt.key[:90], evt.count, us / 1e6))
    kernels.sort(key=lambda k: -k[2])
    out = {"by_class_s": dict(by_class), "top_kernels": kernels[:top]}
    if top_ops:
        ops = [(e.key, str(e.input_shapes)[:160], e.count, _device_us(e) / 1e6)
               for e in prof.key_averages(group_by_input_shape=True)
               if e.device_type == torch.autograd.DeviceType.CPU and _device_us(e) > 0]
        out["top_ops"] = sorted(ops, key=lambda o: -o[3])[:top_ops]
    return out


def print_profile(report: dict, title: str) -> None:
    print(f"\ntop kernels ({title}):")
    for name, count, sec in report["top_kernels"]:
        print(f"  {sec:8.3f} s  x{count:<6d} {name}")
    if report.get("top_ops"):
        print(f"top operators by the GPU time of their kernels ({title}):")
    for op, shapes, count, sec in report.get("top_ops", []):
        print(f"  {sec:8.3f} s  x{count:<6d} {op} {shapes}")
    by_class = sorted(report["by_class_s"].items(), key=lambda kv: -kv[1])
    print(f"by class ({sum(report['by_class_s'].values()):.3f} s of kernels): "
          + ", ".join(f"{k} {v:.3f} s" for k, v in by_class))
