"""The GPU benchmarks' CPU smoke modes: the scripts a GPU session depends on must run (no timing is checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_bench_train_step_isolated_rows_relay_progress_and_results(tmp_path):
    """Each row in its own process: its step times are relayed as they happen (a row stopped by a time limit still
    shows how far it got) and its result comes back to the table and the JSON."""
    proc = _run("benchmarks/bench_train_step.py", "--tiny", "--no-peer", "--checkpointing", "full",
                "--warmup", "1", "--reps", "1", "--isolate", "yes", out=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny full default: set up in" in proc.stdout and "timed step 1/1:" in proc.stdout, proc.stdout
    rows = json.loads((tmp_path / "bench_train_step.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["s_per_step"] > 0 and "ckpt=full" in rows[0]["impl"]


def test_bench_startup_writes_a_reference_checkpoint_and_measures_the_start(tmp_path):
    """The two halves the script runs in their own processes (write, then measure a fresh start), in this one."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_startup
    import torch

    ckpt = tmp_path / "model.pt"
    bench_startup.write_checkpoint("tiny", ckpt)
    assert all(k.startswith("net.") for k in torch.load(ckpt, mmap=True, weights_only=True))
    result = bench_startup.measure_start("tiny", 4, ckpt, torch.device("cpu"))
    assert result["file_bytes"] == ckpt.stat().st_size and result["seconds"] > 0
    assert result["peak_RssAnon_gib"] > 0 and result["peak_VmRSS_gib"] >= result["peak_RssAnon_gib"]


def test_memory_plan_table_covers_every_gpu_and_marks_measured_rows(tmp_path):
    """docs/memory.md's table comes from this script: one row per GPU class, four cases each, measured rows marked."""
    proc = _run("benchmarks/memory_plan_table.py", "--host_gib", "128", out=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith("| ") and "GiB |" in ln]
    assert len(rows) == 5 and all(ln.count(" | ") == 4 for ln in rows), proc.stdout
    assert "**measured**" in proc.stdout and "does not fit" in rows[0]


def test_bench_train_step_stops_a_row_at_its_time_limit_and_keeps_the_others(tmp_path):
    """--row_timeout: a row still running at its limit is stopped and recorded as such (with the step times it
    reported), and the JSON is written after every row, so a measurement stopped from outside keeps what it has."""
    proc = _run("benchmarks/bench_train_step.py", "--tiny", "--no-peer", "--checkpointing", "full",
                "--warmup", "1", "--reps", "1", "--isolate", "yes", "--row_timeout", "0.5", out=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "bench_train_step.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["peak_gib"] == "stopped after 0.5 s" and rows[0]["s_per_step"] is None
