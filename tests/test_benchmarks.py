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


def test_live_at_peak_rebuilds_the_blocks_live_at_the_allocated_peak():
    """bench_train_step.py --memory_profile's analysis on a hand-made allocator trace: the peak is where the bytes
    allocated within the trace are largest; the blocks live there are summed by phase and our innermost frame."""
    from benchmarks.profiling import live_at_peak

    ours = [{"filename": "/x/cosmos_predict2/networks/dit.py", "line": 75, "name": "gated_residual"}]
    recompute = [*ours, {"filename": "/t/checkpoint.py", "line": 1, "name": "recompute_fn"}]
    G = 2**30
    events = [
        {"action": "free_requested", "addr": 99, "size": G},  # allocated before the trace: ignored
        {"action": "alloc", "addr": 1, "size": 2 * G, "frames": ours},
        {"action": "alloc", "addr": 2, "size": G, "frames": recompute},
        {"action": "free_requested", "addr": 2, "size": G},
        {"action": "free_completed", "addr": 2, "size": G},  # the same free again: counted once
        {"action": "alloc", "addr": 3, "size": 3 * G, "frames": []},  # the peak: 5 GiB
        {"action": "free_requested", "addr": 3, "size": 3 * G},
        {"action": "alloc", "addr": 4, "size": G, "frames": recompute},
    ]
    peak, index, rows = live_at_peak(events)
    assert (peak, index) == (5 * G, 5)
    assert rows == [["backward (autograd engine)", 3.0, 1], ["forward: dit.py:75 gated_residual", 2.0, 1]]
    assert live_at_peak(events[:3])[2] == [["forward: dit.py:75 gated_residual", 2.0, 1],
                                          ["recompute: dit.py:75 gated_residual", 1.0, 1]]  # fmt: skip
