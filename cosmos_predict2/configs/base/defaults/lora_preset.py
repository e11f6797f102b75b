"""Group `lora_preset`: the guide's LoRA parameter guidelines (section 2.1) as selectable presets, applied after the
experiment: `experiment=predict2_video2world_lora_training_2b_custom_data lora_preset=aggressive_2b`.

    2B:  conservative r8/a8 lr 2^-12, balanced r16/a16 lr 2^-10, aggressive r32/a32 lr 2^-9
    14B: conservative r16/a16 lr 2^-12, balanced r32/a32 lr 2^-11, aggressive r64/a64 lr 2^-10
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

PRESETS = {
    "conservative_2b": (8, -12),
    "balanced_2b": (16, -10),
    "aggressive_2b": (32, -9),
    "conservative_14b": (16, -12),
    "balanced_14b": (32, -11),
    "aggressive_14b": (64, -10),
}


def preset(rank: int, lr_exponent: float) -> dict:
    return dict(model=dict(config=dict(lora_rank=rank, lora_alpha=rank)), optimizer=dict(lr=2.0**lr_exponent))


def register_lora_presets() -> None:
    cs = ConfigStore.instance()
    for name, (rank, exponent) in PRESETS.items():
        cs.store(group="lora_preset", package="_global_", name=name, node=preset(rank, exponent))
