"""kill -9 of every rank mid-run, then the same command again: the resumed run must end bitwise equal to an
uninterrupted one (issues 18/19). The guide's torchrun training command with `--nproc_per_node=N`, the tiny
experiment on CPU (gloo) or the given experiment on GPUs; context parallel size `--cp`.

    python benchmarks/kill_resume_check.py --nproc 8 --cp 2          # CPU: 8 gloo ranks, CP=2 x data-parallel 4
Prints the wall times, the resume line and whether the final model files are bitwise equal.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CKPT = "posttraining/video2world_lora/tiny_example/checkpoints"


def command(args, dataset: Path, root: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc}",
            "--master_addr=127.0.0.1", f"--master_port={args.master_port}", "-m", "scripts.train",
            "--config=cosmos_predict2/configs/base/config.py", "--",
            "experiment=predict2_video2world_lora_training_tiny_example", "model.config.train_architecture=lora",
            f"dataloader_train.dataset.dataset_dir={dataset}", "dataloader_train.dataset.num_frames=13",
            f"job.root={root}", "checkpoint.save_iter=2", f"trainer.max_iter={args.max_iter}",
            f"model_parallel.context_parallel_size={args.cp}", "trainer.callbacks.progress_bar.enabled=false",
            "trainer.callbacks.tensorboard.enabled=false"]  # fmt: skip


def tensors(state: dict, prefix: str = ""):
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            yield prefix + k, v
        elif isinstance(v, dict):
            yield from tensors(v, prefix + k + ".")


def kill_after_first_checkpoint(cmd: list[str], root: Path, env: dict) -> float:
    """Start the run, SIGKILL every process of it (torchrun and its ranks) once its first checkpoint is written."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = root / CKPT / "latest_checkpoint.txt"
    while not latest.exists() and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # into the next iteration
    subprocess.run(["pkill", "-9", "-f", f"job.root={root}"])
    proc.wait()
    alive = subprocess.run(["pgrep", "-f", f"job.root={root}"], capture_output=True, text=True).stdout.split()
    assert not alive, f"processes survived the kill: {alive}"
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=8)
    ap.add_argument("--cp", type=int, default=2)
    ap.add_argument("--max_iter", type=int, default=6)
    ap.add_argument("--master_port", type=int, default=12341)
    args = ap.parse_args()
    from tests.data_helpers import make_dataset

    work = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    dataset = make_dataset(work / "ds", {f"c{i}": 13 + i for i in range(args.nproc)}, 64, 64)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    subprocess.run(command(args, dataset, work / "a"), cwd=ROOT, env=env, check=True, capture_output=True)
    uninterrupted = time.time() - t0
    killed_after = kill_after_first_checkpoint(command(args, dataset, work / "b"), work / "b", env)
    point = (work / "b" / CKPT / "latest_checkpoint.txt").read_text().strip()
    t0 = time.time()
    out = subprocess.run(command(args, dataset, work / "b"), cwd=ROOT, env=env, check=True, capture_output=True,
                         text=True)  # fmt: skip
    resumed = time.time() - t0
    final = f"model/iter_{args.max_iter:09d}.pt"
    a, b = (dict(tensors(torch.load(work / r / CKPT / final, weights_only=True))) for r in ("a", "b"))
    equal = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    print(next((ln for ln in (out.stdout + out.stderr).splitlines() if "Resumed from" in ln), "no resume line"))
    print(f"ranks {args.nproc} (CP {args.cp}): uninterrupted {uninterrupted:.1f} s; killed (SIGKILL, all ranks) "
          f"{killed_after:.1f} s after start at {point}; resumed run {resumed:.1f} s; final {final}: {len(a)} "
          f"tensors, bitwise equal to the uninterrupted run: {equal}")
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if equal else 1)


if __name__ == "__main__":
    main()
