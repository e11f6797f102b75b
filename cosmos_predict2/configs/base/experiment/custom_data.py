"""The guide's custom-data examples: put videos/, metas/ and t5_xxl/ under datasets/custom_video2world_lora_dataset
(or override `dataloader_train.dataset.dataset_dir=...`)."""

from __future__ import annotations

from cosmos_predict2.configs.base.experiment import merge, register_experiments, video_dataloader
from cosmos_predict2.configs.base.experiment.recipes import FULL_2B, FULL_14B, LORA_2B, LORA_14B, video_dataset_720p

# The guide's variable names; LoRA and full fine-tuning read different folders and batch sizes.
example_video_lora_dataset = video_dataset_720p("datasets/custom_video2world_lora_dataset")
dataloader_video_train_lora = video_dataloader(example_video_lora_dataset, batch_size=2)
example_video_dataset = video_dataset_720p("datasets/custom_video2world_dataset")
dataloader_video_train = video_dataloader(example_video_dataset, batch_size=1)

predict2_video2world_lora_training_2b_custom_data = merge(
    LORA_2B,
    dict(
        job=dict(name="2b_custom_data"),
        checkpoint=dict(save_iter=500),  # the guide's custom-data value (NeMo assets: 400)
        dataloader_train=dataloader_video_train_lora,
    ),
)
predict2_video2world_lora_training_14b_custom_data = merge(
    LORA_14B,
    dict(
        job=dict(name="14b_custom_data"),
        model_parallel=dict(context_parallel_size=4),  # the guide's custom-data 14B value (NeMo assets: 8)
        dataloader_train=dataloader_video_train_lora,
    ),
)
predict2_video2world_training_2b_custom_data = merge(
    FULL_2B, dict(job=dict(name="2b_custom_data"), dataloader_train=dataloader_video_train)
)
predict2_video2world_training_14b_custom_data = merge(
    FULL_14B, dict(job=dict(name="14b_custom_data"), dataloader_train=dataloader_video_train)
)

register_experiments(
    globals(),
    predict2_video2world_lora_training_2b_custom_data,
    predict2_video2world_lora_training_14b_custom_data,
    predict2_video2world_training_2b_custom_data,
    predict2_video2world_training_14b_custom_data,
)
