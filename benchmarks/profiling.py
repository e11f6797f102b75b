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


def _alloc_label(frames: list[dict]) -> str:
    """Where a block was allocated: the phase (forward, the checkpoint's recompute, or the autograd engine's backward,
    which runs no Python frame) and the innermost frame in this project's code."""
    names = {f.get("name", "") for f in frames}
    if not frames:
        return "backward (autograd engine)"
    phase = "recompute" if names & {"recompute_fn", "unpack_hook"} else "backward" if "backward" in names else "forward"
    ours = [f for f in frames if "/cosmos_predict2/" in f.get("filename", "")]
    where = ours[0] if ours else frames[0]
    return f"{phase}: {where['filename'].rsplit('/', 1)[-1]}:{where['line']} {where['name']}"


def live_at_peak(events: list[dict]) -> tuple[int, int, list[list]]:
    """From the allocator's trace (alloc / free_requested / free_completed events of one device): the peak of the
    bytes allocated within the trace, the index of the event that reached it, and the blocks live there summed by
    `_alloc_label`: [label, GiB, count], largest first. A block freed twice (requested, completed) counts once; a
    free of a block allocated before the trace is ignored."""
    live: dict[int, dict] = {}
    total = peak = peak_index = 0
    for i, e in enumerate(events):  # first pass: where the peak is
        if e["action"] == "alloc":
            live[e["addr"]] = e
            total += e["size"]
        elif e["action"] in ("free_requested", "free_completed") and e["addr"] in live:
            total -= live.pop(e["addr"])["size"]
        if total > peak:
            peak, peak_index = total, i
    live = {}
    for e in events[: peak_index + 1]:  # second pass: the blocks live at the peak
        if e["action"] == "alloc":
            live[e["addr"]] = e
        elif e["action"] in ("free_requested", "free_completed"):
            live.pop(e["addr"], None)
    by_label: dict[str, list] = defaultdict(lambda: [0, 0])
    for e in live.values():
        entry = by_label[_alloc_label(e.get("frames", []))]
        entry[0] += e["size"]
        entry[1] += 1
    rows = sorted(([label, size / 2**30, count] for label, (size, count) in by_label.items()), key=lambda r: -r[1])
    return peak, peak_index, rows


def memory_at_peak(fn: Callable[[], object], top: int = 25) -> dict:
    """Run `fn` once with the CUDA caching allocator's history recorded; rebuild the blocks that were live at the
    peak of allocated memory and sum them by where they were allocated (`_alloc_label`). Blocks allocated before
    the call (weights, optimizer state) are the `baseline`."""
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(max_entries=2_000_000, context="alloc", stacks="python")
    try:
        fn()
        torch.cuda.synchronize()
        snapshot = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    events = snapshot["device_traces"][torch.cuda.current_device()]
    peak, peak_index, rows = live_at_peak(events)
    return {"baseline_gib": baseline / 2**30, "peak_above_baseline_gib": peak / 2**30,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30, "events": len(events),
            "live_at_peak": rows[:top],
            "peak_event": {k: v for k, v in (events[peak_index] if events else {}).items() if k != "frames"}
            | {"frames": (events[peak_index] if events else {}).get("frames", [])[:8]}}  # fmt: skip


def print_memory(report: dict, title: str) -> None:
    print(f"\nlive at the allocated peak ({title}): baseline {report['baseline_gib']:.2f} GiB + "
          f"{report['peak_above_baseline_gib']:.2f} GiB = peak {report['peak_allocated_gib']:.2f} GiB")
    for label, gib, count in report["live_at_peak"]:
        print(f"  {gib:7.3f} GiB  x{count:<5d} {label}")
