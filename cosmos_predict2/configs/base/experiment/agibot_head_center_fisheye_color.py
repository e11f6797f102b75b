"""NVIDIA's AgiBotWorld-Alpha example (post-training_video2world_agibot_fisheye.md): full fine-tuning on the head
center fisheye camera of task 327, clips under datasets/agibot_head_center_fisheye_color/{train,val} (prepared by
`scripts/prepare_agibot_fisheye_data.py`, embedded by `scripts/get_t5_embeddings.py`).

    torchrun --nproc_per_node=8 -m scripts.train --config=cosmos_predict2/configs/base/config.py -- \
        experiment=predict2_video2world_training_2b_agibot_head_center_fisheye_color

Names and values are the reference's (configs/base/experiment/agibot_head_center_fisheye_color.py): 2B lr
2^-15.5, lambdalinear warm-up 2000 / cycle 400k / f_max 0.99 / f_min 0.4; 14B weight decay 0.2, cycle 50k,
f_max 0.2 / f_min 0.1; 100k iterations, a checkpoint every 500, one conditioning frame. The per-resolution
experiments (`_480p_10fps`, `_480p_16fps`, `_720p_10fps`, `_720p_16fps`) start from the released checkpoint of
that resolution and fps (model group `predict2_video2world_fsdp_<size>_<res>p_<fps>fps`) and read the clips at
that resolution, 93 frames each as in the reference (also at 10 fps). The val/ split is not loaded in training.

Where the reference nests keys in `pipe_config`, they sit where our model config has them:
`pipe_config.min/max_num_conditional_frames` -> `model.config.min/max_num_conditional_frames`, and
`pipe_config.net.rope_*_extrapolation_ratio` (2B only) -> `model.config.net`.
"""

from __future__ import annotations

from cosmos_predict2.configs.base.experiment import merge, register_experiments
from cosmos_predict2.configs.base.experiment.recipes import PIPE_CONFIG

NAME = "agibot_head_center_fisheye_color"


def _defaults(model: str, data: str = NAME) -> list:
    return [
        {"override /model": model},
        {"override /optimizer": "fusedadamw"},
        {"override /scheduler": "lambdalinear"},
        {"override /ckpt_type": "standard"},
        {"override /dataloader_train": data},
        # The reference names a loader of the val split; the trainer does not validate, so: none (the split serves
        # inference on held-out clips).
        {"override /dataloader_val": "mock"},
        "_self_",
    ]


_COMMON = dict(
    trainer=dict(distributed_parallelism="fsdp", callbacks=dict(iter_speed=dict(hit_thres=10)), max_iter=100_000),
    checkpoint=dict(save_iter=500),
)
predict2_video2world_training_2b_agibot_head_center_fisheye_color = merge(_COMMON, dict(
    defaults=_defaults("predict2_video2world_fsdp_2b"),
    job=dict(project="posttraining", group="video2world", name=f"2b_{NAME}"),
    model=dict(config=dict(
        pipe_config=PIPE_CONFIG,
        min_num_conditional_frames=1,
        max_num_conditional_frames=1,
        net=dict(rope_h_extrapolation_ratio=2.0, rope_t_extrapolation_ratio=1.0, rope_w_extrapolation_ratio=2.0),
    )),
    model_parallel=dict(context_parallel_size=2),
    optimizer=dict(lr=2 ** (-15.5)),
    scheduler=dict(warm_up_steps=[2_000], cycle_lengths=[400_000], f_max=[0.99], f_min=[0.4]),
))  # fmt: skip
predict2_video2world_training_14b_agibot_head_center_fisheye_color = merge(_COMMON, dict(
    defaults=_defaults("predict2_video2world_fsdp_14b"),
    job=dict(project="posttraining", group="video2world", name=f"14b_{NAME}"),
    model=dict(config=dict(pipe_config=PIPE_CONFIG, min_num_conditional_frames=1, max_num_conditional_frames=1)),
    model_parallel=dict(context_parallel_size=8),
    optimizer=dict(lr=2 ** (-15.5), weight_decay=0.2),
    scheduler=dict(warm_up_steps=[2_000], cycle_lengths=[50_000], f_max=[0.2], f_min=[0.1]),
))  # fmt: skip


def at(base: dict, size: str, resolution: str, fps: int) -> dict:
    """`base` started from the released `<size> <resolution>p <fps>fps` checkpoint, on clips of that resolution;
    the 2B 480p experiments without context parallelism (the reference's)."""
    variant = f"{resolution}p_{fps}fps"
    item = merge(base, dict(
        defaults=_defaults(f"predict2_video2world_fsdp_{size}_{variant}", f"{NAME}_{resolution}p"),
        job=dict(name=f"{size}_{NAME}_{variant}"),
    ))  # fmt: skip
    if size == "2b" and resolution == "480":
        item = merge(item, dict(model_parallel=dict(context_parallel_size=1)))
    return item


_2B, _14B = (predict2_video2world_training_2b_agibot_head_center_fisheye_color,
             predict2_video2world_training_14b_agibot_head_center_fisheye_color)  # fmt: skip
predict2_video2world_training_2b_agibot_head_center_fisheye_color_480p_10fps = at(_2B, "2b", "480", 10)
predict2_video2world_training_2b_agibot_head_center_fisheye_color_480p_16fps = at(_2B, "2b", "480", 16)
predict2_video2world_training_2b_agibot_head_center_fisheye_color_720p_10fps = at(_2B, "2b", "720", 10)
predict2_video2world_training_2b_agibot_head_center_fisheye_color_720p_16fps = at(_2B, "2b", "720", 16)
predict2_video2world_training_14b_agibot_head_center_fisheye_color_480p_10fps = at(_14B, "14b", "480", 10)
predict2_video2world_training_14b_agibot_head_center_fisheye_color_480p_16fps = at(_14B, "14b", "480", 16)
predict2_video2world_training_14b_agibot_head_center_fisheye_color_720p_10fps = at(_14B, "14b", "720", 10)
predict2_video2world_training_14b_agibot_head_center_fisheye_color_720p_16fps = at(_14B, "14b", "720", 16)

register_experiments(
    globals(),
    predict2_video2world_training_2b_agibot_head_center_fisheye_color,
    predict2_video2world_training_2b_agibot_head_center_fisheye_color_480p_10fps,
    predict2_video2world_training_2b_agibot_head_center_fisheye_color_480p_16fps,
    predict2_video2world_training_2b_agibot_head_center_fisheye_color_720p_10fps,
    predict2_video2world_training_2b_agibot_head_center_fisheye_color_720p_16fps,
    predict2_video2world_training_14b_agibot_head_center_fisheye_color,
    predict2_video2world_training_14b_agibot_head_center_fisheye_color_480p_10fps,
    predict2_video2world_training_14b_agibot_head_center_fisheye_color_480p_16fps,
    predict2_video2world_training_14b_agibot_head_center_fisheye_color_720p_10fps,
    predict2_video2world_training_14b_agibot_head_center_fisheye_color_720p_16fps,
)
