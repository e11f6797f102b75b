"""The real example scripts, end to end on CPU with tiny models (in-process `main(argv)`, plus one subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_inference_assets import NUM_FRAMES, assets, common_argv  # noqa: F401

from cosmos_predict2.data.video import probe_video, read_video_window
from cosmos_predict2.inference.safety import SafetyModelUnavailableError
from cosmos_predict2.lora import LoraConfigError
from examples import video2world, video2world_lora

REPO = Path(__file__).resolve().parents[1]


def _check_mp4(path: Path, fps: int = 16) -> None:
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, info.fps) == (NUM_FRAMES, 64, 32, fps)
    frames, _ = read_video_window(path, 0, NUM_FRAMES)
    assert frames.shape == (NUM_FRAMES, 32, 64, 3)


def test_base_script_writes_video_and_is_reproducible(assets, tmp_path):  # noqa: F811
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    assert video2world.main(common_argv(assets, a)) == [a]
    video2world.main(common_argv(assets, b))
    _check_mp4(a)
    assert a.read_bytes() == b.read_bytes()  # same seed -> same video


def test_fps_10_output_and_video_input(assets, tmp_path):  # noqa: F811
    out = tmp_path / "v.mp4"
    argv = common_argv(assets, out, "--fps", "10", "--num_conditional_frames", "5", "--guidance", "0")
    argv[argv.index("--input_path") + 1] = str(assets.video)
    video2world.main(argv)
    _check_mp4(out, fps=10)


def test_lora_script_with_our_adapter_and_flags(assets, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "lora.mp4"
    argv = common_argv(assets, out, "--use_lora", "--lora_rank", "4", "--lora_alpha", "8")
    argv[argv.index("--dit_path") + 1] = str(assets.adapter)
    video2world_lora.main(argv)
    _check_mp4(out)
    assert "rank 4, alpha 8" in capsys.readouterr().out
    argv[argv.index("--lora_alpha") + 1] = "16"
    with pytest.raises(LoraConfigError, match="--lora_alpha 16 but the adapter was trained with alpha 8"):
        video2world_lora.main(argv)


def test_lora_scale_zero_equals_base(assets, tmp_path):  # noqa: F811
    base, scaled = tmp_path / "base.mp4", tmp_path / "scale0.mp4"
    video2world.main(common_argv(assets, base))
    argv = common_argv(assets, scaled, "--use_lora", "--lora_scale", "0")
    argv[argv.index("--dit_path") + 1] = str(assets.adapter)
    video2world_lora.main(argv)
    assert base.read_bytes() == scaled.read_bytes()


def test_base_script_on_lora_checkpoint_explains(assets, tmp_path):  # noqa: F811
    argv = common_argv(assets, tmp_path / "x.mp4")
    argv[argv.index("--dit_path") + 1] = str(assets.adapter)
    with pytest.raises(LoraConfigError, match="examples/video2world_lora.py --use_lora"):
        video2world.main(argv)


def test_guardrail_and_refiner_need_disable_flags(assets, tmp_path):  # noqa: F811
    argv = [a for a in common_argv(assets, tmp_path / "x.mp4") if a != "--disable_guardrail"]
    with pytest.raises(SafetyModelUnavailableError, match="--disable_guardrail"):
        video2world.main(argv + ["--offload_guardrail"])
    argv = [a for a in common_argv(assets, tmp_path / "x.mp4") if a != "--disable_prompt_refiner"]
    with pytest.raises(SafetyModelUnavailableError, match="--disable_prompt_refiner"):
        video2world.main(argv)


def test_batch_json_and_benchmark(assets, tmp_path, capsys):  # noqa: F811
    jobs = [
        {"input_video": str(assets.image), "prompt": "a robot", "output_video": str(tmp_path / "one.mp4")},
        {"input_video": str(assets.video), "prompt": "a teal car", "output_video": str(tmp_path / "two.mp4")},
    ]
    (tmp_path / "batch.json").write_text(json.dumps(jobs))
    argv = common_argv(assets, tmp_path / "unused.mp4", "--batch_input_json", str(tmp_path / "batch.json"),
                       "--benchmark", "--negative_prompt", "")
    written = video2world.main(argv)
    assert written == [tmp_path / "one.mp4", tmp_path / "two.mp4"]
    for path in written:
        _check_mp4(path)
    out = capsys.readouterr().out
    assert "benchmark:" in out and "s per video" in out and "all-zero text embedding" in out
    assert "attention auto" in out  # CPU: PyTorch picks its kernel; on CUDA the line names fa4 or cudnn


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num_frames", "10"], "4k\\+1"),
        (["--num_gpus", "2"], "--num_gpus 2"),
        (["--lora_rank", "4"], None),  # not a flag of the base script: argparse exits
    ],
)
def test_bad_flags(assets, tmp_path, extra, message):  # noqa: F811
    argv = common_argv(assets, tmp_path / "x.mp4", *extra)
    if message is None:
        with pytest.raises(SystemExit):
            video2world.main(argv)
    else:
        with pytest.raises((ValueError, RuntimeError), match=message):
            video2world.main(argv)


def test_wrong_resolution_choice_exits(assets, tmp_path):  # noqa: F811
    with pytest.raises(SystemExit):
        video2world.main(common_argv(assets, tmp_path / "x.mp4", "--resolution", "1080"))


def test_subprocess_run_and_clean_error(assets, tmp_path):  # noqa: F811
    out = tmp_path / "sub.mp4"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "examples/video2world_lora.py"),
                           *common_argv(assets, out, "--use_lora", "--lora_scale", "0.5")[:1],
                           *common_argv(assets, out, "--use_lora")[1:]],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1 and "error:" in proc.stderr and "LoRA" in proc.stderr  # --dit_path is a base model
    argv = common_argv(assets, out, "--use_lora")
    argv[argv.index("--dit_path") + 1] = str(assets.adapter)
    proc = subprocess.run([sys.executable, str(REPO / "examples/video2world_lora.py"), *argv],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _check_mp4(out)


def test_memory_flags_run(assets, tmp_path):  # noqa: F811
    out = tmp_path / "mem.mp4"
    video2world.main(common_argv(assets, out, "--offload_text_encoder", "--downcast_text_encoder",
                                 "--offload_tokenizer", "--sequential_guidance"))
    _check_mp4(out)


def test_precomputed_embeddings_need_no_t5(assets, tmp_path):  # noqa: F811
    import numpy as np

    from cosmos_predict2.text import save_embedding_pickle

    rng = np.random.default_rng(0)
    save_embedding_pickle(tmp_path / "p.pickle", rng.standard_normal((5, 32)).astype(np.float32))
    save_embedding_pickle(tmp_path / "n.pickle", rng.standard_normal((9, 32)).astype(np.float32))
    out = tmp_path / "emb.mp4"
    argv = common_argv(assets, out, "--prompt_embedding", str(tmp_path / "p.pickle"),
                       "--negative_prompt_embedding", str(tmp_path / "n.pickle"))
    argv[argv.index("--t5_path") + 1] = str(tmp_path / "no_t5_here")
    video2world.main(argv)
    _check_mp4(out)
