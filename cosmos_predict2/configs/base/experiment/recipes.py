"""The guide's 720p training recipes (docs/reference.md §7, §12), shared by the Cosmos-NeMo-Assets and custom-data
experiments.

Each recipe is a whole experiment but for `job.name` and `dataloader_train`, which the data-set modules add with
`merge(RECIPE, dict(job=dict(name=...), dataloader_train=...))`. Registers nothing itself.
"""

from __future__ import annotations

from cosmos_predict2.configs.base.experiment import experiment_defaults, lora_config, merge
from cosmos_predict2.configs.lazy import L
from cosmos_predict2.data import Dataset

PIPE_CONFIG = dict(
    ema=dict(enabled=True),
    prompt_refiner_config=dict(enabled=False),
    guardrail_config=dict(enabled=False),
)


def video_dataset_720p(dataset_dir: str) -> dict:
    """93 frames (what the released checkpoints expect) at 720p, 16:9."""
    return L(Dataset)(dataset_dir=dataset_dir, num_frames=93, video_size=(704, 1280))


# What every 720p 2B experiment shares, LoRA or full fine-tuning.
_2B = dict(
    defaults=experiment_defaults("predict2_video2world_fsdp_2b"),
    job=dict(project="posttraining"),
    model_parallel=dict(context_parallel_size=2),
    trainer=dict(distributed_parallelism="fsdp", callbacks=dict(iter_speed=dict(hit_thres=10))),
)
# What changes from 2B to 14B besides the training values: the model group and the context-parallel size.
_AT_14B = dict(
    defaults=experiment_defaults("predict2_video2world_fsdp_14b"),
    model_parallel=dict(context_parallel_size=8),
)

LORA_2B = merge(
    _2B,
    dict(
        job=dict(group="video2world_lora"),
        model=dict(config=lora_config(rank=16, pipe_config=PIPE_CONFIG)),
        trainer=dict(max_iter=2000),
        checkpoint=dict(save_iter=400),
        # The guide's LoRA lr (the reference's 2^-14.5 learns nothing; docs/reference.md §12).
        optimizer=dict(lr=2 ** (-10)),
        scheduler=dict(warm_up_steps=[0], cycle_lengths=[2_000], f_max=[0.6], f_min=[0.0]),
    ),
)
LORA_14B = merge(
    LORA_2B,
    _AT_14B,
    dict(
        model=dict(config=dict(lora_rank=32, lora_alpha=32)),
        trainer=dict(max_iter=1500),
        checkpoint=dict(save_iter=300),
        optimizer=dict(lr=2 ** (-11)),
        scheduler=dict(cycle_lengths=[1_500]),
    ),
)

# Full fine-tuning: the reference's values.
FULL_2B = merge(
    _2B,
    dict(
        job=dict(group="video2world"),
        model=dict(config=dict(train_architecture="full", pipe_config=PIPE_CONFIG)),
        trainer=dict(max_iter=1000),
        checkpoint=dict(save_iter=500),
        optimizer=dict(lr=2 ** (-14.5)),
        scheduler=dict(warm_up_steps=[2_000], cycle_lengths=[400_000], f_max=[0.6], f_min=[0.3]),
    ),
)
FULL_14B = merge(
    FULL_2B,
    _AT_14B,
    dict(
        optimizer=dict(weight_decay=0.2),
        scheduler=dict(cycle_lengths=[40_000], f_max=[0.25], f_min=[0.1]),
    ),
)
