"""Experiment modules. Every module in this package is imported by `configs.base.config.import_experiments`; the
data-set modules register their experiment dicts with `register_experiments` (or the guide's ConfigStore loop),
`recipes` holds the guide's training recipes they share.

The pieces below build the guide's experiment skeleton, so that an experiment is written as its differences:
`merge(RECIPE, dict(job=dict(name=...), dataloader_train=...))`.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from torch.utils.data import DataLoader

from cosmos_predict2.configs.lazy import L
from cosmos_predict2.data import get_sampler

# docs/reference.md §7: the guide's targets (every attention projection and both MLP layers).
LORA_TARGET_MODULES = "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2"


def register_experiments(namespace: dict, *items: dict) -> list[str]:
    """Store each experiment dict under the (lower-cased) name of the module-level variable that holds it,
    in group "experiment", package "_global_" (the guide's registration loop)."""
    cs = ConfigStore.instance()
    names = []
    for item in items:
        matches = [name.lower() for name, value in namespace.items() if value is item]
        if not matches:
            raise ValueError("register_experiments: pass experiments that are module-level variables")
        cs.store(group="experiment", package="_global_", name=matches[0], node=item)
        names.append(matches[0])
    return names


def merge(*dicts: dict) -> dict:
    """A new dict: `dicts` merged left to right, nested dicts key by key, anything else (lists included) replaced,
    as Hydra merges an experiment over the defaults. The inputs are not changed, so recipes can be shared."""
    out: dict[str, Any] = {}
    for d in dicts:
        for key, value in d.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = merge(value) if isinstance(value, dict) else value
    return out


def experiment_defaults(model: str) -> list[dict | str]:
    """The defaults list every shipped experiment starts with (docs/reference.md §6); only the model group differs."""
    return [
        {"override /model": model},
        {"override /optimizer": "fusedadamw"},
        {"override /scheduler": "lambdalinear"},
        {"override /ckpt_type": "standard"},
        {"override /dataloader_val": "mock"},
        "_self_",
    ]


def lora_config(rank: int, **config: Any) -> dict:
    """`model.config` of a LoRA experiment: the guide sets alpha = rank (scale 1) on the default targets."""
    return dict(
        train_architecture="lora",
        lora_rank=rank,
        lora_alpha=rank,
        lora_target_modules=LORA_TARGET_MODULES,
        init_lora_weights=True,
        **config,
    )


def video_dataloader(dataset: dict, batch_size: int, num_workers: int = 8, pin_memory: bool = True) -> dict:
    """The guide's L(DataLoader) node: `dataset` (an L(Dataset) node) read through its distributed sampler."""
    return L(DataLoader)(
        dataset=dataset,
        sampler=L(get_sampler)(dataset=dataset),
        batch_size=batch_size,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )
