"""Peak host RAM and GPU memory of a LoRA training start from a real-size checkpoint file (issue 14: loading 14B,
a 28.5 GB bf16 file, must not hold two copies in host RAM or on the GPU).

Writes a reference-format checkpoint (`net.<name>` keys, bf16, zeros: the values do not matter here) when
`--checkpoint` does not exist yet, in a separate process, then times the trainer's start in a fresh process: the
network built on the meta device, the file memory-mapped and assigned tensor by tensor onto the GPU, LoRA adapters,
the EMA. A thread samples /proc/self/status every 10 ms: RssAnon (the process's own memory: what a second copy
would show up in) and RssFile (the file's pages mapped into the process: page cache, which the kernel reclaims
under pressure).

    python benchmarks/bench_startup.py --model_size 14B --lora_rank 32 --checkpoint /tmp/model-14b.pt
    python benchmarks/bench_startup.py --tiny --checkpoint /tmp/tiny.pt     # CPU smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.configs.lazy import instantiate  # noqa: E402
from cosmos_predict2.networks import build_net  # noqa: E402
from cosmos_predict2.training.model import Video2WorldModel, model_config_dict  # noqa: E402

GIB = 2**30


def write_checkpoint(size: str, path: Path) -> None:
    """A reference-format `.pt` of the right keys and shapes (bf16 zeros), written atomically."""
    net = build_net(size, device="meta", dtype=torch.bfloat16)
    state = {f"net.{k}": torch.zeros(v.shape, dtype=torch.bfloat16) for k, v in net.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    tmp.rename(path)


class RssSampler(threading.Thread):
    """Peak RssAnon / RssFile / VmRSS of this process (GiB), sampled every 10 ms (Linux)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = {"RssAnon": 0.0, "RssFile": 0.0, "VmRSS": 0.0}
        self.running = True

    def sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in self.peak:
                self.peak[key] = max(self.peak[key], int(value.split()[0]) * 1024 / GIB)

    def run(self) -> None:
        while self.running:
            self.sample()
            time.sleep(0.01)

    def stop(self) -> dict:
        self.running = False
        self.join()
        self.sample()
        return {f"peak_{k}_gib": round(v, 3) for k, v in self.peak.items()}


def measure_start(size: str, rank: int, path: Path, device: torch.device) -> dict:
    sampler = RssSampler()
    sampler.sample()
    before = dict(sampler.peak)
    sampler.start()
    t0 = time.perf_counter()
    cfg = model_config_dict(model_size=size, dit_path=str(path), train_architecture="lora", lora_rank=rank,
                            lora_alpha=rank, precision="bf16" if device.type == "cuda" else "fp32",
                            tokenizer_type="tiny_random", hash_base_checkpoint=False)  # fmt: skip
    model = instantiate({"_target_": f"{Video2WorldModel.__module__}.Video2WorldModel", "config": cfg})
    model.setup(device, seed=0)
    model.init_ema()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    result = {"seconds": round(seconds, 2), "file_bytes": path.stat().st_size,
              "file_gib": round(path.stat().st_size / GIB, 3),
              "rss_before_gib": round(before["VmRSS"], 3), **sampler.stop()}  # fmt: skip
    if device.type == "cuda":
        result["gpu_peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
        result["gpu_allocated_gib"] = round(torch.cuda.memory_allocated() / GIB, 3)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_size", default="14B", choices=("2B", "14B"))
    ap.add_argument("--tiny", action="store_true", help="CPU smoke check with the tiny network")
    ap.add_argument("--lora_rank", type=int, default=32)
    ap.add_argument("--checkpoint", required=True, help="the .pt to load (written first if it does not exist)")
    ap.add_argument("--write", action="store_true", help=argparse.SUPPRESS)  # internal: only write the file
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # internal: only measure
    args = ap.parse_args(argv)
    size = "tiny" if args.tiny else args.model_size
    path = Path(args.checkpoint)
    if args.write:
        return write_checkpoint(size, path)
    if args.measure:
        device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
        print("RESULT " + json.dumps({"model": size, "lora_rank": args.lora_rank,
                                      **measure_start(size, args.lora_rank, path, device)}))  # fmt: skip
        return
    argv = sys.argv[1:] if argv is None else argv
    if not path.exists():  # in its own process, so the writer's host copy is gone before the measurement
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, *argv, "--write"], check=True)
        print(f"wrote {path} ({path.stat().st_size / GIB:.1f} GiB) in {time.perf_counter() - t0:.0f} s", flush=True)
    proc = subprocess.run([sys.executable, __file__, *argv, "--measure"], capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"the measured start failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1][7:])
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_startup.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
