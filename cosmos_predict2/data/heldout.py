"""The validation set of a training run (`dataloader_val`, docs/guide.md "Validation").

    dataloader_val=mock                      no validation set (the guide's default)
    dataloader_val=heldout                   a held-out fraction of the training folder (`fraction`, default 0.1)
    dataloader_val.dataset_dir=DIR           a separate folder, read with the training dataset's settings
                                             (frames, size, cached latents); nothing is held out

Which clips are held out depends only on each clip's file stem: a clip is held out when the first 8 bytes of
sha256("cosmos-heldout-v1:" + stem), read as a fraction of 2^64, are below `fraction`. So the split is the same in
every run, on every rank, and a clip added to the folder later never moves another one between the two sides. When
no stem falls below the fraction (tiny folders) the clip with the smallest hash is held out, so there is always one.
The training loader leaves the held-out clips out (`HeldoutSplit.train_part`): they are never trained on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

SALT = "cosmos-heldout-v1"
DEFAULT_FRACTION = 0.1


def heldout_score(stem: str) -> float:
    """The stem's position in [0, 1): a clip is held out when it is below the fraction."""
    digest = hashlib.sha256(f"{SALT}:{stem}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def heldout_stems(stems: list[str], fraction: float) -> set[str]:
    """The held-out stems among `stems` (module docstring); at least one when there are two or more clips."""
    held = {s for s in stems if heldout_score(s) < fraction}
    if not held and fraction > 0 and len(set(stems)) > 1:
        held = {min(stems, key=heldout_score)}
    return held


def dataset_stems(dataset: torch.utils.data.Dataset) -> list[str]:
    """The file stem of every index of a `cosmos_predict2.data.Dataset` (videos or cached latents)."""
    cache = getattr(dataset, "_cache", None)
    if cache is not None:
        return list(cache.stems)
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise TypeError(f"dataloader_val=heldout needs a dataset with file stems (cosmos_predict2.data.Dataset), "
                        f"got {type(dataset).__name__}")  # fmt: skip
    return [s.stem for s in samples]


@dataclass(frozen=True)
class HeldoutSplit:
    """The held-out fraction of one training folder."""

    fraction: float = DEFAULT_FRACTION

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise ValueError(f"dataloader_val.fraction must lie in (0, 1), got {self.fraction}")

    def heldout_indices(self, dataset: torch.utils.data.Dataset) -> list[int]:
        stems = dataset_stems(dataset)
        held = heldout_stems(stems, self.fraction)
        return [i for i, s in enumerate(stems) if s in held]

    def train_part(self, dataset: torch.utils.data.Dataset) -> Subset:
        held = set(self.heldout_indices(dataset))
        keep = [i for i in range(len(dataset)) if i not in held]
        if not keep:
            raise ValueError(f"dataloader_val.fraction={self.fraction} holds out every training clip")
        return Subset(dataset, keep)

    def val_part(self, dataset: torch.utils.data.Dataset) -> Subset:
        return Subset(dataset, self.heldout_indices(dataset))


def _plain(node: Any) -> dict:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        return dict(OmegaConf.to_container(node, resolve=True))
    return dict(node or {})


def has_validation_set(dataloader_val: Mapping | None) -> bool:
    cfg = _plain(dataloader_val)
    return bool(cfg.get("enabled", False) or cfg.get("dataset_dir"))


def split_of(dataloader_val: Mapping | None) -> HeldoutSplit | None:
    """The split the training loader must apply: None for `mock` and for a separate validation folder."""
    cfg = _plain(dataloader_val)
    if not has_validation_set(cfg) or cfg.get("dataset_dir"):
        return None
    return HeldoutSplit(float(cfg.get("fraction", DEFAULT_FRACTION)))


@dataclass
class ValidationClips:
    """The clips validation reads: `dataset[i]` for i in `indices`, each named `stems[k]`, its video in `videos[k]`."""

    dataset: torch.utils.data.Dataset
    indices: list[int]
    stems: list[str]
    videos: list[Path]

    def __len__(self) -> int:
        return len(self.indices)


def validation_clips(dataloader_val: Mapping | None, train_dataset_cfg: Any,
                     train_dataset: torch.utils.data.Dataset | None, max_clips: int = 0) -> ValidationClips | None:
    """The validation set `dataloader_val` describes (None for `mock`). `train_dataset` is the training loader's
    dataset (a Subset of the whole folder under a held-out split); `train_dataset_cfg` the lazy node it came
    from, re-instantiated with another `dataset_dir` for a separate folder. max_clips > 0 keeps the first ones."""
    from cosmos_predict2.configs.lazy import instantiate

    cfg = _plain(dataloader_val)
    if not has_validation_set(cfg):
        return None
    if cfg.get("dataset_dir"):
        full = instantiate(train_dataset_cfg, dataset_dir=str(cfg["dataset_dir"]))
        indices = list(range(len(full)))
    else:
        full = train_dataset.dataset if isinstance(train_dataset, Subset) else train_dataset
        indices = split_of(cfg).heldout_indices(full)
    if max_clips > 0:
        indices = indices[:max_clips]
    stems = dataset_stems(full)
    folder = Path(os.fspath(full.dataset_dir))
    return ValidationClips(full, indices, [stems[i] for i in indices],
                           [folder / "videos" / f"{stems[i]}.mp4" for i in indices])  # fmt: skip


__all__ = ["HeldoutSplit", "ValidationClips", "dataset_stems", "has_validation_set", "heldout_score", "heldout_stems",
           "split_of", "validation_clips"]
