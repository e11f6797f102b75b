"""Cosmos-NeMo-Assets experiments: LoRA with the guide's values (docs/reference.md §7, §12) and full fine-tuning.

    torchrun --nproc_per_node=8 -m scripts.train --config=cosmos_predict2/configs/base/config.py -- \
        experiment=predict2_video2world_lora_training_2b_cosmos_nemo_assets
"""

from __future__ import annotations

from cosmos_predict2.configs.base.experiment import merge, register_experiments, video_dataloader
from cosmos_predict2.configs.base.experiment.recipes import FULL_2B, FULL_14B, LORA_2B, LORA_14B, video_dataset_720p

example_video_dataset_cosmos_nemo_assets = video_dataset_720p("datasets/cosmos_nemo_assets")


def nemo_dataloader(batch_size: int) -> dict:
    return video_dataloader(example_video_dataset_cosmos_nemo_assets, batch_size=batch_size)


predict2_video2world_lora_training_2b_cosmos_nemo_assets = merge(
    LORA_2B,
    dict(
        job=dict(name="2b_cosmos_nemo_assets"),
        dataloader_train=nemo_dataloader(batch_size=2),  # LoRA's small memory footprint allows batch 2
    ),
)
predict2_video2world_lora_training_14b_cosmos_nemo_assets = merge(
    LORA_14B, dict(job=dict(name="14b_cosmos_nemo_assets"), dataloader_train=nemo_dataloader(batch_size=2))
)

# Full fine-tuning counterparts (the reference's cosmos_nemo_assets experiments).
predict2_video2world_training_2b_cosmos_nemo_assets = merge(
    FULL_2B, dict(job=dict(name="2b_cosmos_nemo_assets"), dataloader_train=nemo_dataloader(batch_size=1))
)
predict2_video2world_training_14b_cosmos_nemo_assets = merge(
    FULL_14B, dict(job=dict(name="14b_cosmos_nemo_assets"), dataloader_train=nemo_dataloader(batch_size=1))
)

register_experiments(
    globals(),
    predict2_video2world_lora_training_2b_cosmos_nemo_assets,
    predict2_video2world_lora_training_14b_cosmos_nemo_assets,
    predict2_video2world_training_2b_cosmos_nemo_assets,
    predict2_video2world_training_14b_cosmos_nemo_assets,
)
