"""The guide's domain recipes (section 5, "Domain-Specific LoRA Training") as experiments for 2B and 14B, on the
custom-data folder: `experiment=predict2_video2world_lora_training_2b_robotics` (also `_surveillance`, `_creative`,
and `_14b_...`). The guide writes `max_iter` and `lr` inside `model.config`; here they sit where the trainer and the
optimizer read them, and the lambdalinear cycle follows `max_iter` as in the guide's other LoRA recipes.

The creative recipe's targets include `norm1,norm2`, which name no Linear layer of the network: as in the reference,
those are reported and the matched targets train.
"""

from __future__ import annotations

from cosmos_predict2.configs.base.experiment import merge, register_experiments
from cosmos_predict2.configs.base.experiment.custom_data import dataloader_video_train_lora
from cosmos_predict2.configs.base.experiment.recipes import LORA_2B, LORA_14B

ATTENTION = "q_proj,k_proj,v_proj,output_proj"
ATTENTION_MLP = ATTENTION + ",mlp.layer1,mlp.layer2"
# (rank, alpha, targets, max_iter, lr) of the guide's three domains.
DOMAINS = {
    "robotics": (24, 24, ATTENTION_MLP, 3000, 2 ** (-9.5)),  # Robotics / Physical AI
    "surveillance": (16, 16, ATTENTION, 2000, 2 ** (-10.5)),  # attention only, for subtle changes
    "creative": (32, 48, ATTENTION_MLP + ",norm1,norm2", 4000, 2 ** (-9)),  # higher alpha: stronger adaptation
}


def domain_experiment(recipe: dict, size: str, domain: str) -> dict:
    rank, alpha, targets, max_iter, lr = DOMAINS[domain]
    return merge(recipe, dict(
        job=dict(name=f"{size}_{domain}"),
        model=dict(config=dict(lora_rank=rank, lora_alpha=alpha, lora_target_modules=targets)),
        trainer=dict(max_iter=max_iter),
        optimizer=dict(lr=lr),
        scheduler=dict(cycle_lengths=[max_iter]),
        dataloader_train=dataloader_video_train_lora,
    ))  # fmt: skip


predict2_video2world_lora_training_2b_robotics = domain_experiment(LORA_2B, "2b", "robotics")
predict2_video2world_lora_training_2b_surveillance = domain_experiment(LORA_2B, "2b", "surveillance")
predict2_video2world_lora_training_2b_creative = domain_experiment(LORA_2B, "2b", "creative")
predict2_video2world_lora_training_14b_robotics = domain_experiment(LORA_14B, "14b", "robotics")
predict2_video2world_lora_training_14b_surveillance = domain_experiment(LORA_14B, "14b", "surveillance")
predict2_video2world_lora_training_14b_creative = domain_experiment(LORA_14B, "14b", "creative")

register_experiments(
    globals(),
    predict2_video2world_lora_training_2b_robotics,
    predict2_video2world_lora_training_2b_surveillance,
    predict2_video2world_lora_training_2b_creative,
    predict2_video2world_lora_training_14b_robotics,
    predict2_video2world_lora_training_14b_surveillance,
    predict2_video2world_lora_training_14b_creative,
)
