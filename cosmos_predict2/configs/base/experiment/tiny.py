"""Tiny experiments that train on a CPU in seconds (tests, the demo): the "tiny" network with random weights,
a small random VAE (or cached latents), 9-frame 64x64 clips, embeddings 64 wide (make_tiny_t5's default).

    python -m scripts.train --config=cosmos_predict2/configs/base/config.py -- \
        experiment=predict2_video2world_lora_training_tiny_example dataloader_train.dataset.dataset_dir=DIR
"""

from __future__ import annotations

from torch.utils.data import DataLoader

from cosmos_predict2.configs.base.experiment import register_experiments
from cosmos_predict2.configs.lazy import L
from cosmos_predict2.data import Dataset, get_sampler

DEFAULTS_TINY = [
    {"override /model": "predict2_video2world_tiny"},
    {"override /optimizer": "fusedadamw"},
    {"override /scheduler": "lambdalinear"},
    {"override /ckpt_type": "standard"},
    {"override /dataloader_val": "mock"},
    "_self_",
]

tiny_video_dataset = L(Dataset)(
    dataset_dir="datasets/tiny_example",
    num_frames=9,  # 4k+1 frames -> 3 latent frames
    video_size=(64, 64),
    use_cached_latents=False,
)

tiny_dataloader = L(DataLoader)(
    dataset=tiny_video_dataset,
    sampler=L(get_sampler)(dataset=tiny_video_dataset),
    batch_size=2,
    drop_last=True,
    num_workers=0,
    pin_memory=False,
)

predict2_video2world_lora_training_tiny_example = dict(
    defaults=DEFAULTS_TINY,
    job=dict(project="posttraining", group="video2world_lora", name="tiny_example"),
    model=dict(
        config=dict(
            train_architecture="lora",
            lora_rank=8,
            lora_alpha=8,
            lora_target_modules="q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2",
            init_lora_weights=True,
            pipe_config=dict(ema=dict(enabled=True)),
        )
    ),
    dataloader_train=tiny_dataloader,
    trainer=dict(max_iter=20, logging_iter=5, callbacks=dict(iter_speed=dict(hit_thres=2, every_n=5))),
    checkpoint=dict(save_iter=10),
    optimizer=dict(lr=2 ** (-8), weight_decay=0.0),
    scheduler=dict(warm_up_steps=[0], cycle_lengths=[1_000], f_max=[1.0], f_min=[1.0]),
)

predict2_video2world_training_tiny_example = dict(
    defaults=DEFAULTS_TINY,
    job=dict(project="posttraining", group="video2world", name="tiny_example"),
    model=dict(config=dict(train_architecture="full", random_init="scratch", pipe_config=dict(ema=dict(enabled=True)))),
    dataloader_train=tiny_dataloader,
    trainer=dict(max_iter=20, logging_iter=5, callbacks=dict(iter_speed=dict(hit_thres=2, every_n=5))),
    checkpoint=dict(save_iter=10),
    optimizer=dict(lr=2 ** (-10), weight_decay=0.0),
    scheduler=dict(warm_up_steps=[0], cycle_lengths=[1_000], f_max=[1.0], f_min=[1.0]),
)

register_experiments(
    globals(),
    predict2_video2world_lora_training_tiny_example,
    predict2_video2world_training_tiny_example,
)
