"""One LoRA training step of the 2B or 14B Video2World model: ours vs the diffusers + PEFT peer, same inputs.

Ours: the real trainer pieces (training_step with the docs/reference.md §2 sigma/conditioning/dropout, backward,
clip at 1.0, fused AdamW, LoRA-only EMA), LoRA r16 on q/k/v/output_proj + mlp, bf16 base, the fused bf16 adapters
(lora_compute_dtype=base), random base weights, batch 1 of cached latents (93 frames = 24 latent frames), selective
vs full activation checkpointing.
Peer: diffusers CosmosTransformer3DModel + PEFT LoRA r16 on the same layers, gradient checkpointing, bf16, same
inputs, plain MSE on the velocity, AdamW on adapters (docs/reference.md §11: 16.7 s / 30.8 GiB at 720p, 3.2 s /
14.8 GiB at 480p on one H200).

    python benchmarks/bench_train_step.py                    # CUDA: 480p and 720p; JSON to $OUT/bench_train_step.json
    python benchmarks/bench_train_step.py --tiny             # CPU smoke check of the script
    python benchmarks/bench_train_step.py --resolutions 720p --no-peer --reps 5
    python benchmarks/bench_train_step.py --model_size 14B --lora_rank 32 --checkpointing full --no-peer
    python benchmarks/bench_train_step.py --resolutions 720p --checkpointing full --memory_mode default,low --no-peer
    python benchmarks/bench_train_step.py --resolutions 720p --checkpointing selective --no-peer --profile

On CUDA every row runs in its own fresh process (`--isolate`, the default there): in one process a later contender
inherits the earlier one's kernel choices and allocator state (the peer measured 26.1 s after ours and 16.75 s alone).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.profiling import memory_at_peak, print_memory, print_profile, profile_call  # noqa: E402
from cosmos_predict2.configs.lazy import instantiate  # noqa: E402
from cosmos_predict2.lora.spec import LORA_COMPUTE_DTYPES  # noqa: E402
from cosmos_predict2.networks import attention_backend_for, set_attention_backend  # noqa: E402
from cosmos_predict2.training.model import Video2WorldModel, model_config_dict  # noqa: E402
from cosmos_predict2.training.optim import build_optimizer, clip_gradients  # noqa: E402

LATENT_SHAPES = {"480p": (24, 54, 96), "720p": (24, 88, 160), "tiny": (3, 8, 8)}
LORA_TARGETS = "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2"
PEER_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def progress(message: str) -> None:
    """A progress line: printed at once, and relayed live by the parent of an isolated row, so that a row stopped
    by a time limit still shows how far it got and how long its steps took."""
    print(f"progress: {message}", flush=True)


def measure(step, warmup: int, reps: int, device: torch.device) -> tuple[float, float]:
    """(median s/step, peak GiB over the timed steps)."""
    progress(f"set up in {time.perf_counter() - START:.1f} s")
    for i in range(warmup):
        t0 = time.perf_counter()
        step()
        sync(device)
        progress(f"warm-up step {i + 1}/{warmup}: {time.perf_counter() - t0:.3f} s")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
        peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
        progress(f"timed step {i + 1}/{reps}: {times[-1]:.3f} s{peak}")
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    if device.type == "cuda":
        MEMORY["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    return statistics.median(times), peak


PROFILE = False  # --profile: one more step of each row of ours under torch.profiler (kernel classes, top operators)
MEMORY_PROFILE = False  # --memory_profile: one more step of ours with the allocator's history: what is live at the peak
MEMORY: dict = {}  # peak reserved memory of the last measurement (CUDA)
START = time.perf_counter()  # when this process started measuring (a row's set-up time is reported from it)


def make_batch(shape, text_dim: int, device: torch.device, seed: int = 0) -> dict:
    T, H, W = shape
    g = torch.Generator(device=device).manual_seed(seed)
    return {
        "latents": torch.randn(1, 16, T, H, W, generator=g, device=device),
        "t5_text_embeddings": torch.randn(1, 512, text_dim, generator=g, device=device),
        "padding_mask": torch.zeros(1, 1, H * 8, W * 8, device=device),
    }


def ours(size: str, shape, ckpt: str, device, dtype: str, warmup: int, reps: int, extra: dict,
         rank: int = 16, memory_mode: str = "default", storage: str = "bf16", **config: object) -> tuple[float, float]:
    cfg = model_config_dict(model_size=size, dit_path="", train_architecture="lora", lora_rank=rank, lora_alpha=rank,
                            lora_target_modules=LORA_TARGETS, precision=dtype, activation_checkpointing=ckpt,
                            tokenizer_type="tiny_random", hash_base_checkpoint=False,
                            memory_mode=memory_mode, base_weight_storage=storage, **config)  # fmt: skip
    model = instantiate({"_target_": f"{Video2WorldModel.__module__}.Video2WorldModel", "config": cfg})
    model.setup(device, seed=0, latent_shape_T_H_W=shape)
    extra["memory_mode"] = model.config.memory_mode
    model.init_ema()
    batch = make_batch(shape, model.net_kwargs()["crossattn_emb_channels"], device)
    extra["trainable_parameters"] = sum(p.numel() for p in model.net.parameters() if p.requires_grad)
    step = lora_train_step(model, batch)
    result = measure(step, warmup, reps, device)
    if PROFILE and device.type == "cuda":  # one more step under the profiler, after the timed ones
        extra["profile"] = profile_call(step, top=25, top_ops=40)
        print_profile(extra["profile"], "one training step")
    if MEMORY_PROFILE and device.type == "cuda":
        extra["memory_at_peak"] = memory_at_peak(step)
        print_memory(extra["memory_at_peak"], "one training step")
    return result  # the model is freed with this frame (see free_memory)


def lora_train_step(model: Video2WorldModel, batch: dict):
    """The trainer's step on `model` (setup, EMA on): loss, backward, clip at 1.0, fused AdamW, EMA; a closure
    that advances the iteration each call."""
    named = [(n, p) for n, p in model.net.named_parameters() if p.requires_grad]
    opt = build_optimizer([p for _, p in named], lr=2**-10)
    it = [0]

    def step():
        loss, _ = model.training_step(batch, it[0])
        loss.backward()
        clip_gradients(named, 1.0)
        opt.step()
        model.ema.update(model.net, it[0])
        opt.zero_grad(set_to_none=True)
        it[0] += 1

    return step


def peer(size: str, shape, device, dtype: str, warmup: int, reps: int, rank: int = 16,
         adapters: str = "fp32") -> tuple[float, float]:
    """adapters: "fp32" (PEFT's trainable adapters upcast, the usual mixed-precision recipe) or "bf16" (left in
    the model's dtype, as diffusers' `add_adapter` leaves them)."""
    from diffusers import CosmosTransformer3DModel
    from peft import LoraConfig, inject_adapter_in_model

    from cosmos_predict2.networks import build_net
    from cosmos_predict2.networks.weights import diffusers_config
    from testing_support.diffusers_compat import ensure_cosmos_padding_resize

    ensure_cosmos_padding_resize()
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    cfg = {k: v for k, v in diffusers_config(build_net(size, device="meta")).items()
           if not k.startswith("_")}  # fmt: skip
    with torch.device(device):
        net = CosmosTransformer3DModel(**cfg).to(torch_dtype)  # random weights: speed does not depend on values
    net.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=PEER_TARGETS, lora_dropout=0.0), net)
    for n, p in net.named_parameters():
        if ".lora_" in n:
            p.requires_grad_(True)
            p.data = p.data.float() if adapters == "fp32" else p.data
    net.enable_gradient_checkpointing()
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2**-10, fused=device.type == "cuda")
    T, H, W = shape
    b = make_batch(shape, cfg["text_embed_dim"], device)
    x0 = b["latents"].to(torch_dtype)
    ctx = b["t5_text_embeddings"].to(torch_dtype)
    cond = torch.zeros(1, 1, T, H, W, device=device, dtype=torch_dtype)
    cond[:, :, :1] = 1
    pad = b["padding_mask"].to(torch_dtype)

    def step():
        t = torch.rand(1, device=device)
        eps = torch.randn_like(x0)
        xt = ((1 - t) * x0 + t * eps).to(torch_dtype)  # t is fp32: keep the peer's input in its dtype
        out = net(xt, t.view(1, 1, 1, 1, 1).expand(1, 1, T, 1, 1), ctx, condition_mask=cond, padding_mask=pad,
                  return_dict=False)[0]  # fmt: skip
        ((out.float() - (eps - x0).float()) ** 2).mean().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return measure(step, warmup, reps, device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_row(args, row: dict, device: torch.device, size: str, dtype: str, details: dict) -> dict:
    """One measurement in this process: ours with a backend/checkpointing, or the peer."""
    shape = LATENT_SHAPES[row["resolution"]]
    net_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    if row["impl"] == "peer":
        adapters = row.get("adapters", "fp32")
        impl = f"peer diffusers+PEFT r{args.lora_rank} ckpt adapters={adapters}"
        measure_row = lambda: peer(size, shape, device, dtype, args.warmup, args.reps, args.lora_rank,  # noqa: E731
                                   adapters)
    else:
        set_attention_backend(row["backend"])
        mode = f" mem={row['memory_mode']}" if row.get("memory_mode", "default") != "default" else ""
        mode += f" weights={args.base_weight_storage}" if args.base_weight_storage != "bf16" else ""
        budget = args.selective_budget_gib if row["ckpt"] == "selective" else None
        mode += f" keep<={budget:g}GiB" if budget is not None else ""
        mode += f" lora={args.lora_compute_dtype}" if args.lora_compute_dtype else ""
        impl = f"ours r{args.lora_rank} ckpt={row['ckpt']}{mode} attn={attention_backend_for(device, net_dtype)}"
        lora = {"lora_compute_dtype": args.lora_compute_dtype} if args.lora_compute_dtype else {}
        measure_row = lambda: ours(size, shape, row["ckpt"], device, dtype, args.warmup, args.reps,  # noqa: E731
                                   details, args.lora_rank, row.get("memory_mode", "default"),
                                   args.base_weight_storage, selective_checkpoint_budget_gib=budget, **lora)
    try:
        sec, peak = measure_row()
    except torch.OutOfMemoryError:
        sec, peak = None, "OOM"
    free_memory(device)
    return {"resolution": row["resolution"], "impl": impl, "s_per_step": sec, "peak_gib": peak,
            "peak_reserved_gib": MEMORY.get("peak_reserved_gib")}  # fmt: skip


def run_isolated(argv: list[str], row: dict, row_timeout: float | None = None) -> dict:
    """The same script for one row in a fresh Python process (see the module docstring). After `row_timeout`
    seconds the row is stopped and kept with the step times it reported (`progress` lines) as its partial result."""
    import collections
    import queue
    import subprocess
    import threading

    proc = subprocess.Popen([sys.executable, __file__, *argv, "--row", json.dumps(row)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout] + [lines.put(None)], daemon=True).start()
    deadline = None if row_timeout is None else time.monotonic() + row_timeout
    result, tail, progress_lines = None, collections.deque(maxlen=80), []
    while True:
        try:
            line = lines.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except queue.Empty:  # past the row's time limit
            proc.kill()
            break
        if line is None:
            break
        if line.startswith("ROW "):
            result = json.loads(line[4:])
        elif line.startswith("progress: "):
            progress_lines.append(line[10:].strip())
            print(f"  {row['resolution']} {row.get('ckpt', 'peer')} {row.get('memory_mode', '')}: {line[10:]}",
                  end="", flush=True)  # fmt: skip
        else:
            tail.append(line)
    if proc.wait() != 0 or result is None:
        print("".join(tail), file=sys.stderr)
        stopped = deadline is not None and time.monotonic() >= deadline
        return {"resolution": row["resolution"], "impl": str(row), "s_per_step": None,
                "peak_gib": f"stopped after {row_timeout:g} s" if stopped else "failed",
                "progress": progress_lines}  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke check with the tiny network")
    ap.add_argument("--model_size", default="2B", choices=("2B", "14B"))
    ap.add_argument("--lora_rank", type=int, default=16)
    ap.add_argument("--resolutions", default="480p,720p")
    ap.add_argument("--checkpointing", default="selective,full")
    ap.add_argument("--memory_mode", default="default",
                    help="comma list of model.config.memory_mode values to time ours under (docs/memory.md): "
                         "default, offload_activations, stream_weights, low, auto")
    ap.add_argument("--base_weight_storage", default="bf16", choices=("bf16", "fp8_e5m2", "fp8_e4m3"),
                    help="model.config.base_weight_storage: fp8 storage of the frozen block weights (lossy)")
    ap.add_argument("--lora_compute_dtype", default=None, choices=LORA_COMPUTE_DTYPES,
                    help="model.config.lora_compute_dtype (default: the config's): base = the fused adapters")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--peer_only", action="store_true", help="time only the peer's rows")
    ap.add_argument("--peer_adapters", default="fp32",
                    help="comma list: the peer's adapter dtype, fp32 (upcast) and/or bf16 (diffusers' add_adapter)")
    ap.add_argument("--selective_budget_gib", type=float, default=None,
                    help="selective checkpointing keeps self-attention outputs of only this many GiB of blocks")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attn_backends", default="best",
                    help="comma list of attention backends to time ours under (e.g. cudnn,fa4); default: best")
    ap.add_argument("--isolate", choices=("auto", "yes", "no"), default="auto",
                    help="each row in a fresh process (auto: on CUDA)")
    ap.add_argument("--row_timeout", type=float, default=None,
                    help="stop an isolated row after this many seconds, keeping the step times it reported")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed steps, one more step of ours under torch.profiler: GPU time by kernel "
                         "class and the top operators with their shapes (in the JSON's details.profile)")
    ap.add_argument("--memory_profile", action="store_true",
                    help="after the timed steps, one more step of ours with the CUDA allocator's history recorded: "
                         "the blocks live at the peak, summed by where they were allocated (details.memory_at_peak)")
    ap.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: run one row and print it
    args = ap.parse_args(argv)
    global PROFILE, MEMORY_PROFILE
    PROFILE, MEMORY_PROFILE = args.profile, args.memory_profile

    if args.tiny:
        device, size, dtype, resolutions = torch.device("cpu"), "tiny", "fp32", ["tiny"]
    else:
        if not torch.cuda.is_available():
            sys.exit("CUDA is required for the 2B/14B benchmark; use --tiny for a CPU smoke check")
        device, size, dtype, resolutions = torch.device("cuda"), args.model_size, "bf16", args.resolutions.split(",")
    details = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda"
               else "cpu", "model": size, "lora_rank": args.lora_rank, "batch": 1}  # fmt: skip
    if args.row is not None:
        print("ROW " + json.dumps({**run_row(args, json.loads(args.row), device, size, dtype, details),
                                   "details": details}))  # fmt: skip
        return
    plan = [{"resolution": res, "impl": "ours", "backend": b, "ckpt": c, "memory_mode": m} for res in resolutions
            for b, c, m in itertools.product(args.attn_backends.split(","), args.checkpointing.split(","),
                                             args.memory_mode.split(","))] if not args.peer_only else []
    plan += [] if args.no_peer else [{"resolution": res, "impl": "peer", "adapters": a} for res in resolutions
                                     for a in args.peer_adapters.split(",")]
    isolate = args.isolate == "yes" or (args.isolate == "auto" and device.type == "cuda")
    rows = []
    for row in sorted(plan, key=lambda r: resolutions.index(r["resolution"])):
        result = (run_isolated(argv, row, args.row_timeout) if isolate
                  else run_row(args, row, device, size, dtype, details))  # fmt: skip
        details.update(result.pop("details", {}))
        rows.append(result)
        print(f"done: {result}", flush=True)
        out = os.environ.get("OUT")
        if out:  # after every row: a run stopped from outside keeps the rows it finished
            Path(out).mkdir(parents=True, exist_ok=True)
            (Path(out) / "bench_train_step.json").write_text(json.dumps({"rows": rows, "details": details}, indent=2))
    print(f"\n{details}")
    print(f"{'res':<6} {'implementation':<60} {'s/step':>9} {'peak GiB':>9} {'reserved':>9}")
    for r in rows:
        sec = f"{r['s_per_step']:.3f}" if r["s_per_step"] is not None else "-"
        peak = r["peak_gib"] if isinstance(r["peak_gib"], str) else f"{r['peak_gib']:.1f}"
        reserved = f"{r['peak_reserved_gib']:.1f}" if r.get("peak_reserved_gib") else "-"
        print(f"{r['resolution']:<6} {r['impl']:<60} {sec:>9} {peak:>9} {reserved:>9}")


if __name__ == "__main__":
    main()
