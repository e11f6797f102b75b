"""Cosmos-NeMo-Assets experiments: LoRA with the guide's values (docs/reference.md §7, §12) and full fine-tuning.

    torchrun --nproc_per_node=8 -m scripts.train --config=cosmos_predict2/configs/base/config.py -- \
        experiment=predict2_video2world_lora_training_2b_cosmos_nemo_assets
"""

from __future__ import annotations

from torch.utils.data import DataLoader

from cosmos_predict2.configs.base.experiment import register_experiments
from cosmos_predict2.configs.lazy import L
from cosmos_predict2.data import Dataset, get_sampler

DEFAULTS_2B = [
    {"override /model": "predict2_video2world_fsdp_2b"},
    {"override /optimizer": "fusedadamw"},
    {"override /scheduler": "lambdalinear"},
    {"override /ckpt_type": "standard"},
    {"override /dataloader_val": "mock"},
    "_self_",
]
DEFAULTS_14B = [{"override /model": "predict2_video2world_fsdp_14b"}, *DEFAULTS_2B[1:]]
PIPE_CONFIG = dict(
    ema=dict(enabled=True),
    prompt_refiner_config=dict(enabled=False),
    guardrail_config=dict(enabled=False),
)

example_video_dataset_cosmos_nemo_assets = L(Dataset)(
    dataset_dir="datasets/cosmos_nemo_assets",
    num_frames=93,
    video_size=(704, 1280),  # 720p, 16:9
)


def nemo_dataloader(batch_size: int) -> dict:
    return L(DataLoader)(
        dataset=example_video_dataset_cosmos_nemo_assets,
        sampler=L(get_sampler)(dataset=example_video_dataset_cosmos_nemo_assets),
        batch_size=batch_size,
        drop_last=True,
        num_workers=8,
        pin_memory=True,
    )


predict2_video2world_lora_training_2b_cosmos_nemo_assets = dict(
    defaults=DEFAULTS_2B,
    job=dict(project="posttraining", group="video2world_lora", name="2b_cosmos_nemo_assets"),
    model=dict(
        config=dict(
            train_architecture="lora",
            lora_rank=16,
            lora_alpha=16,
            lora_target_modules="q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2",
            init_lora_weights=True,
            pipe_config=PIPE_CONFIG,
        )
    ),
    model_parallel=dict(context_parallel_size=2),
    dataloader_train=nemo_dataloader(batch_size=2),  # LoRA's small memory footprint allows batch 2
    trainer=dict(distributed_parallelism="fsdp", callbacks=dict(iter_speed=dict(hit_thres=10)), max_iter=2000),
    checkpoint=dict(save_iter=400),
    optimizer=dict(lr=2 ** (-10)),  # the guide's LoRA lr (reference's 2^-14.5 learns nothing; docs/reference.md §12)
    scheduler=dict(warm_up_steps=[0], cycle_lengths=[2_000], f_max=[0.6], f_min=[0.0]),
)

predict2_video2world_lora_training_14b_cosmos_nemo_assets = dict(
    defaults=DEFAULTS_14B,
    job=dict(project="posttraining", group="video2world_lora", name="14b_cosmos_nemo_assets"),
    model=dict(
        config=dict(
            train_architecture="lora",
            lora_rank=32,
            lora_alpha=32,
            lora_target_modules="q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2",
            init_lora_weights=True,
            pipe_config=PIPE_CONFIG,
        )
    ),
    model_parallel=dict(context_parallel_size=8),
    dataloader_train=nemo_dataloader(batch_size=2),
    trainer=dict(distributed_parallelism="fsdp", callbacks=dict(iter_speed=dict(hit_thres=10)), max_iter=1500),
    checkpoint=dict(save_iter=300),
    optimizer=dict(lr=2 ** (-11)),
    scheduler=dict(warm_up_steps=[0], cycle_lengths=[1_500], f_max=[0.6], f_min=[0.0]),
)

# Full fine-tuning counterparts (the reference's cosmos_nemo_assets experiments).
predict2_video2world_training_2b_cosmos_nemo_assets = dict(
    defaults=DEFAULTS_2B,
    job=dict(project="posttraining", group="video2world", name="2b_cosmos_nemo_assets"),
    model=dict(config=dict(train_architecture="full", pipe_config=PIPE_CONFIG)),
    model_parallel=dict(context_parallel_size=2),
    dataloader_train=nemo_dataloader(batch_size=1),
    trainer=dict(distributed_parallelism="fsdp", callbacks=dict(iter_speed=dict(hit_thres=10)), max_iter=1000),
    checkpoint=dict(save_iter=500),
    optimizer=dict(lr=2 ** (-14.5)),
    scheduler=dict(warm_up_steps=[2_000], cycle_lengths=[400_000], f_max=[0.6], f_min=[0.3]),
)

predict2_video2world_training_14b_cosmos_nemo_assets = dict(
    defaults=DEFAULTS_14B,
    job=dict(project="posttraining", group="video2world", name="14b_cosmos_nemo_assets"),
    model=dict(config=dict(train_architecture="full", pipe_config=PIPE_CONFIG)),
    model_parallel=dict(context_parallel_size=8),
    dataloader_train=nemo_dataloader(batch_size=1),
    trainer=dict(distributed_parallelism="fsdp", callbacks=dict(iter_speed=dict(hit_thres=10)), max_iter=1000),
    checkpoint=dict(save_iter=500),
    optimizer=dict(lr=2 ** (-14.5), weight_decay=0.2),
    scheduler=dict(warm_up_steps=[2_000], cycle_lengths=[40_000], f_max=[0.25], f_min=[0.1]),
)

register_experiments(
    globals(),
    predict2_video2world_lora_training_2b_cosmos_nemo_assets,
    predict2_video2world_lora_training_14b_cosmos_nemo_assets,
    predict2_video2world_training_2b_cosmos_nemo_assets,
    predict2_video2world_training_14b_cosmos_nemo_assets,
)
