"""Tiny experiments that train on a CPU in seconds (tests, the demo): the "tiny" network with random weights,
a small random VAE (or cached latents), 9-frame 64x64 clips, embeddings 32 wide (the tiny network and
demo.tiny_t5.make_tiny_t5 both use 32).

    python -m scripts.train --config=cosmos_predict2/configs/base/config.py -- \
        experiment=predict2_video2world_lora_training_tiny_example dataloader_train.dataset.dataset_dir=DIR
"""

from __future__ import annotations

from cosmos_predict2.configs.base.experiment import (
    experiment_defaults,
    lora_config,
    merge,
    register_experiments,
    video_dataloader,
)
from cosmos_predict2.configs.lazy import L
from cosmos_predict2.data import Dataset

tiny_video_dataset = L(Dataset)(
    dataset_dir="datasets/tiny_example",
    num_frames=9,  # 4k+1 frames -> 3 latent frames
    video_size=(64, 64),
    use_cached_latents=False,
)
# In-process loading: worker processes would cost more than the tiny clips themselves.
tiny_dataloader = video_dataloader(tiny_video_dataset, batch_size=2, num_workers=0, pin_memory=False)

# Both tiny experiments but for the group, the model config and the lr.
TINY = dict(
    defaults=experiment_defaults("predict2_video2world_tiny"),
    job=dict(project="posttraining", name="tiny_example"),
    dataloader_train=tiny_dataloader,
    trainer=dict(max_iter=20, logging_iter=5, callbacks=dict(iter_speed=dict(hit_thres=2, every_n=5))),
    checkpoint=dict(save_iter=10),
    optimizer=dict(weight_decay=0.0),
    scheduler=dict(warm_up_steps=[0], cycle_lengths=[1_000], f_max=[1.0], f_min=[1.0]),  # constant lr
)
TINY_PIPE_CONFIG = dict(ema=dict(enabled=True))

predict2_video2world_lora_training_tiny_example = merge(
    TINY,
    dict(
        job=dict(group="video2world_lora"),
        model=dict(config=lora_config(rank=8, pipe_config=TINY_PIPE_CONFIG)),
        optimizer=dict(lr=2 ** (-8)),
    ),
)
predict2_video2world_training_tiny_example = merge(
    TINY,
    dict(
        job=dict(group="video2world"),
        model=dict(config=dict(train_architecture="full", random_init="scratch", pipe_config=TINY_PIPE_CONFIG)),
        optimizer=dict(lr=2 ** (-10)),
    ),
)

register_experiments(
    globals(),
    predict2_video2world_lora_training_tiny_example,
    predict2_video2world_training_tiny_example,
)
