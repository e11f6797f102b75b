"""The inference benchmark's CPU smoke mode runs the same sampling path and writes its JSON."""

from __future__ import annotations

import json

from benchmarks.bench_inference import main


def test_tiny_benchmark_smoke(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    rows = main(["--tiny"])
    assert rows[0]["net_forwards"] == 8  # 3 steps + final prediction, two guidance branches each
    assert json.loads((tmp_path / "bench_inference.json").read_text())[0]["model"] == "tiny"
    assert "s/video" in capsys.readouterr().out
