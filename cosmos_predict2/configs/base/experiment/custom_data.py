"""The guide's custom-data examples: put videos/, metas/ and t5_xxl/ under datasets/custom_video2world_lora_dataset
(or override `dataloader_train.dataset.dataset_dir=...`)."""

from __future__ import annotations

from torch.utils.data import DataLoader

from cosmos_predict2.configs.base.experiment import register_experiments
from cosmos_predict2.configs.base.experiment.cosmos_nemo_assets import DEFAULTS_2B, DEFAULTS_14B, PIPE_CONFIG
from cosmos_predict2.configs.lazy import L
from cosmos_predict2.data import Dataset, get_sampler

example_video_lora_dataset = L(Dataset)(
    dataset_dir="datasets/custom_video2world_lora_dataset",
    num_frames=93,
    video_size=(704, 1280),  # 720 resolution, 16:9 aspect ratio
)

dataloader_video_train_lora = L(DataLoader)(
    dataset=example_video_lora_dataset,
    sampler=L(get_sampler)(dataset=example_video_lora_dataset),
    batch_size=2,
    drop_last=True,
    num_workers=8,
    pin_memory=True,
)

example_video_dataset = L(Dataset)(
    dataset_dir="datasets/custom_video2world_dataset",
    num_frames=93,
    video_size=(704, 1280),
)

dataloader_video_train = L(DataLoader)(
    dataset=example_video_dataset,
    sampler=L(get_sampler)(dataset=example_video_dataset),
    batch_size=1,
    drop_last=True,
    num_workers=8,
    pin_memory=True,
)

LORA_2B = dict(
    train_architecture="lora",
    lora_rank=16,
    lora_alpha=16,
    lora_target_modules="q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2",
    init_lora_weights=True,
    pipe_config=PIPE_CONFIG,
)

predict2_video2world_lora_training_2b_custom_data = dict(
    defaults=DEFAULTS_2B,
    job=dict(project="posttraining", group="video2world_lora", name="2b_custom_data"),
    model=dict(config=LORA_2B),
    model_parallel=dict(context_parallel_size=2),
    dataloader_train=dataloader_video_train_lora,
    trainer=dict(distributed_parallelism="fsdp", callbacks=dict(iter_speed=dict(hit_thres=10)), max_iter=2000),
    checkpoint=dict(save_iter=400),
    optimizer=dict(lr=2 ** (-10)),
    scheduler=dict(warm_up_steps=[0], cycle_lengths=[2_000], f_max=[0.6], f_min=[0.0]),
)

predict2_video2world_lora_training_14b_custom_data = dict(
    defaults=DEFAULTS_14B,
    job=dict(project="posttraining", group="video2world_lora", name="14b_custom_data"),
    model=dict(config={**LORA_2B, "lora_rank": 32, "lora_alpha": 32}),
    model_parallel=dict(context_parallel_size=4),
    dataloader_train=dataloader_video_train_lora,
    trainer=dict(distributed_parallelism="fsdp", callbacks=dict(iter_speed=dict(hit_thres=10)), max_iter=1500),
    checkpoint=dict(save_iter=300),
    optimizer=dict(lr=2 ** (-11)),
    scheduler=dict(warm_up_steps=[0], cycle_lengths=[1_500], f_max=[0.6], f_min=[0.0]),
)

predict2_video2world_training_2b_custom_data = dict(
    defaults=DEFAULTS_2B,
    job=dict(project="posttraining", group="video2world", name="2b_custom_data"),
    model=dict(config=dict(train_architecture="full", pipe_config=PIPE_CONFIG)),
    model_parallel=dict(context_parallel_size=2),
    dataloader_train=dataloader_video_train,
    trainer=dict(distributed_parallelism="fsdp", callbacks=dict(iter_speed=dict(hit_thres=10)), max_iter=1000),
    checkpoint=dict(save_iter=500),
    optimizer=dict(lr=2 ** (-14.5)),
    scheduler=dict(warm_up_steps=[2_000], cycle_lengths=[400_000], f_max=[0.6], f_min=[0.3]),
)

predict2_video2world_training_14b_custom_data = dict(
    defaults=DEFAULTS_14B,
    job=dict(project="posttraining", group="video2world", name="14b_custom_data"),
    model=dict(config=dict(train_architecture="full", pipe_config=PIPE_CONFIG)),
    model_parallel=dict(context_parallel_size=8),
    dataloader_train=dataloader_video_train,
    trainer=dict(distributed_parallelism="fsdp", callbacks=dict(iter_speed=dict(hit_thres=10)), max_iter=1000),
    checkpoint=dict(save_iter=500),
    optimizer=dict(lr=2 ** (-14.5), weight_decay=0.2),
    scheduler=dict(warm_up_steps=[2_000], cycle_lengths=[40_000], f_max=[0.25], f_min=[0.1]),
)

register_experiments(
    globals(),
    predict2_video2world_lora_training_2b_custom_data,
    predict2_video2world_lora_training_14b_custom_data,
    predict2_video2world_training_2b_custom_data,
    predict2_video2world_training_14b_custom_data,
)
