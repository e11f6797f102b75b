"""Released-checkpoint variants (group model_variant), the AgiBot fisheye and GR00T experiments, and their
data-preparation entry points on tiny fake datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cosmos_predict2.configs.compose import ConfigError, compose_config

CONFIG = "cosmos_predict2/configs/base/config.py"
GUIDE_EXPERIMENTS = {
    "2B": ["predict2_video2world_lora_training_2b_cosmos_nemo_assets",
           "predict2_video2world_lora_training_2b_custom_data"],
    "14B": ["predict2_video2world_lora_training_14b_cosmos_nemo_assets",
            "predict2_video2world_lora_training_14b_custom_data"],
}  # fmt: skip
GUIDE_RANK = {"2B": 16, "14B": 32}
VARIANTS = [(s, r, f) for s in ("2B", "14B") for r in ("480", "720") for f in (10, 16)]


def _compose(*overrides: str):
    return compose_config(CONFIG, list(overrides))


def test_variant_values_agree_with_inference_defaults():
    from cosmos_predict2.configs.base.defaults import model_variant as mv
    from cosmos_predict2.inference import defaults

    assert mv.FRAMES_PER_FPS == defaults.FRAMES_PER_FPS
    for (size, res, fps) in VARIANTS:
        assert mv.default_dit_path(size, res, fps) == defaults.default_dit_path(size, res, fps)
        assert mv.VIDEO_SIZE_16_9[res] == defaults.video_size_hw(res, "16:9")


@pytest.mark.parametrize(("size", "res", "fps"), VARIANTS)
def test_every_variant_composes_with_the_guide_experiments(size, res, fps):
    name = f"{size.lower()}_{res}p_{fps}fps"
    for experiment in GUIDE_EXPERIMENTS[size]:
        cfg = _compose(f"experiment={experiment}", f"model_variant={name}")
        assert cfg.model.config.dit_path == (
            f"checkpoints/nvidia/Cosmos-Predict2-{size}-Video2World/model-{res}p-{fps}fps.pt")
        assert cfg.model.config.model_size == size
        assert cfg.dataloader_train.dataset.num_frames == {16: 93, 10: 61}[fps]
        assert list(cfg.dataloader_train.dataset.video_size) == {"480": [432, 768], "720": [704, 1280]}[res]
        assert cfg.model.config.lora_rank == GUIDE_RANK[size]  # the experiment's recipe is kept


def test_a_variant_of_the_other_size_is_refused():
    with pytest.raises(ConfigError, match=r"model_variant=14b_480p_10fps is a 14B checkpoint.*model_size=2B: "
                                          r"use model_variant=2b_480p_10fps"):
        _compose("experiment=predict2_video2world_lora_training_2b_custom_data", "model_variant=14b_480p_10fps")
    with pytest.raises(ConfigError, match="use model_variant=14b_720p_16fps"):
        _compose("experiment=predict2_video2world_lora_training_14b_custom_data", "model_variant=2b_720p_16fps")


def test_a_command_line_key_still_wins_over_the_variant():
    cfg = _compose("experiment=predict2_video2world_lora_training_2b_custom_data", "model_variant=2b_480p_16fps",
                   "dataloader_train.dataset.num_frames=61")  # fmt: skip
    assert cfg.dataloader_train.dataset.num_frames == 61


AGIBOT = "agibot_head_center_fisheye_color"


@pytest.mark.parametrize("size", ["2b", "14b"])
@pytest.mark.parametrize("variant", ["", "_480p_10fps", "_480p_16fps", "_720p_10fps", "_720p_16fps"])
def test_agibot_experiments_are_the_references(size, variant):
    cfg = _compose(f"experiment=predict2_video2world_training_{size}_{AGIBOT}{variant}")
    m = cfg.model.config
    job = ("posttraining", "video2world", f"{size}_{AGIBOT}{variant}")
    assert (cfg.job.project, cfg.job.group, cfg.job.name) == job
    res, fps = (variant[1:4], variant[6:8]) if variant else ("720", "16")
    assert m.dit_path == f"checkpoints/nvidia/Cosmos-Predict2-{size.upper()}-Video2World/model-{res}p-{fps}fps.pt"
    assert m.train_architecture == "full" and m.min_num_conditional_frames == m.max_num_conditional_frames == 1
    data = cfg.dataloader_train
    assert data.dataset.dataset_dir == f"datasets/{AGIBOT}/train" and data.dataset.num_frames == 93
    assert list(data.dataset.video_size) == ([432, 768] if res == "480" else [704, 1280])
    assert (data.batch_size, data.num_workers) == (1, 4) and not cfg.dataloader_val.enabled
    assert (cfg.trainer.max_iter, cfg.checkpoint.save_iter, cfg.trainer.callbacks.iter_speed.hit_thres) == (
        100_000, 500, 10)
    assert cfg.optimizer.lr == 2 ** (-15.5) and list(cfg.scheduler.warm_up_steps) == [2000]
    if size == "2b":
        assert dict(m.net) == dict(rope_h_extrapolation_ratio=2.0, rope_t_extrapolation_ratio=1.0,
                                   rope_w_extrapolation_ratio=2.0)  # fmt: skip
        assert cfg.model_parallel.context_parallel_size == (1 if res == "480" else 2)
        assert (list(cfg.scheduler.cycle_lengths), list(cfg.scheduler.f_max), list(cfg.scheduler.f_min)) == (
            [400_000], [0.99], [0.4])
    else:
        assert dict(m.net) == {} and cfg.model_parallel.context_parallel_size == 8 and cfg.optimizer.weight_decay == 0.2
        assert (list(cfg.scheduler.cycle_lengths), list(cfg.scheduler.f_max), list(cfg.scheduler.f_min)) == (
            [50_000], [0.2], [0.1])


def test_agibot_guide_command_with_lora():
    cfg = _compose(f"experiment=predict2_video2world_training_14b_{AGIBOT}", "model.config.train_architecture=lora")
    assert cfg.model.config.train_architecture == "lora"


@pytest.mark.parametrize(("size", "shard", "cp"), [("2b", 8, 1), ("14b", 32, 4)])
def test_groot_experiments_are_the_references(size, shard, cp):
    cfg = _compose(f"experiment=predict2_video2world_training_{size}_groot_gr1_480")
    assert (cfg.job.group, cfg.job.name) == ("video2world", f"{size}_groot_gr1_480")
    assert cfg.model.config.fsdp_shard_size == shard and cfg.model_parallel.context_parallel_size == cp
    d = cfg.dataloader_train
    assert (d.dataset.dataset_dir, d.dataset.num_frames, list(d.dataset.video_size)) == (
        "datasets/benchmark_train/gr1", 93, [432, 768])
    assert (d.batch_size, d.num_workers, cfg.checkpoint.save_iter, cfg.optimizer.lr) == (1, 8, 200, 2 ** (-14.5))
    assert (list(cfg.scheduler.cycle_lengths), list(cfg.scheduler.warm_up_steps)) == ([100_000], [1_000])
    # the guide's optional initialisation from the GR00T Dreams checkpoint
    path = "checkpoints/nvidia/Cosmos-Predict2-14B-Video2World-Sample-GR00T-Dreams-GR1/model-480p-16fps.pt"
    assert _compose(f"experiment=predict2_video2world_training_{size}_groot_gr1_480",
                    f"model.config.dit_path={path}").model.config.dit_path == path  # fmt: skip


def test_dataloader_train_group_swaps_the_data_of_experiments_that_select_it():
    cfg = _compose("experiment=predict2_video2world_training_2b_groot_gr1_480",
                   f"dataloader_train={AGIBOT}_480p")  # fmt: skip
    assert cfg.dataloader_train.dataset.dataset_dir == f"datasets/{AGIBOT}/train"


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    from demo.tiny_t5 import make_tiny_t5

    return make_tiny_t5(tmp_path_factory.mktemp("t5"), d_model=32)


def test_groot_metadata_becomes_metas_and_embeddings(tmp_path, tiny_t5, capsys):
    from cosmos_predict2.text.embeddings import load_embedding_pickle
    from scripts.get_t5_embeddings_from_groot_dataset import main

    (tmp_path / "videos").mkdir()
    (tmp_path / "metadata.csv").write_text(
        'video_filename,caption\ngr1/a.mp4,"Pick the cup, then the plate."\nb.mp4,Use the left hand.\nc.mp4,\n')
    assert main(["--dataset_path", str(tmp_path), "--t5_path", str(tiny_t5), "--device", "cpu"]) == 1  # c: no caption
    prefix = "The robot arm is performing a task. "
    assert (tmp_path / "metas" / "a.txt").read_text() == prefix + "Pick the cup, then the plate."
    assert (tmp_path / "metas" / "b.txt").read_text() == prefix + "Use the left hand."
    for stem in ("a", "b"):
        assert load_embedding_pickle(tmp_path / "t5_xxl" / f"{stem}.pickle") is not None
    assert "FAILED" in capsys.readouterr().out


def test_agibot_split_cuts_windows_into_train_and_val_with_captions(tmp_path):
    from cosmos_predict2.data.video import probe_video, write_video
    from scripts.prepare_agibot_fisheye_data import main, windows
    from tests.data_helpers import frame_pattern

    assert windows(27, 5, 7.5) == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 27)]
    assert windows(28, 5, 7.5)[-2:] == [(20, 25), (25, 28)]
    data = tmp_path / "agibot"
    for episode, n in (("100", 40), ("685393", 20)):
        videos = data / "observations" / "327" / episode / "videos"
        videos.mkdir(parents=True)
        write_video(videos / "head_center_fisheye_color.mp4", frame_pattern(n, 32, 48), fps=10)
        write_video(videos / "hand_left_color.mp4", frame_pattern(4, 32, 48), fps=10)
        (data / "observations" / "327" / episode / "depth").mkdir()
    assert main(["--delete-only", "--data_dir", str(data)]) == 0
    assert sorted(p.name for p in data.rglob("*.mp4")) == ["head_center_fisheye_color.mp4"] * 2
    assert not list(data.rglob("depth"))
    stem = "task_327_episode_100_window_0_frame_0-9"
    caption = json.dumps({"video_clip": stem, "caption": "A robot."})
    (tmp_path / "agibot_head_center_fisheye_color.jsonl").write_text(caption)
    args = ["--split-only", "--data_dir", str(data), "--window-size", "1", "--min-last-window", "1.5"]
    assert main([*args, "--val_episode_ids", "685393"]) == 0
    out = tmp_path / "agibot_head_center_fisheye_color"
    train = sorted(p.name for p in (out / "train" / "videos").iterdir())
    assert train == [f"task_327_episode_100_window_{i}_frame_{10 * i}-{10 * i + 9}.mp4" for i in range(4)]
    val = sorted(p.name for p in (out / "val" / "videos").iterdir())  # 2 s: over 1.5 s, so two windows
    assert val == ["task_327_episode_685393_window_0_frame_0-9.mp4", "task_327_episode_685393_window_1_frame_10-19.mp4"]
    info = probe_video(out / "train" / "videos" / f"{stem}.mp4")
    assert info.num_frames == 10 and np.isclose(info.fps, 10)
    assert (out / "train" / "metas" / f"{stem}.txt").read_text() == "A robot."
