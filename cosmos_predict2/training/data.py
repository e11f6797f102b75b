"""A resumable training data stream.

The config describes the loader the guide's way (`L(DataLoader)(dataset=L(Dataset)(...), sampler=L(get_sampler)(
dataset=...), batch_size=2, drop_last=True, num_workers=8, pin_memory=True)`). The trainer instantiates the dataset
and the sampler from it, then builds its own DataLoader with the same batch size and worker settings around

  - `ResumableBatchSampler`: epochs of the configured (distributed) sampler laid end to end, with
    `sampler.set_epoch(e)` per epoch, cut into batches; it starts at any batch index, so resuming at iteration n
    continues with batch n exactly (no replay of the consumed batches is needed);
  - `SeededDataset`: reseeds Python's `random`, NumPy and torch before every item from (seed, position in the
    stream), so random windows are identical whichever worker loads a sample and however the run was split.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from cosmos_predict2.configs.lazy import _to_container, instantiate


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Infinite stream of batches of (dataset index, item seed) pairs starting at batch `start_batch`."""

    def __init__(self, sampler: Sampler, batch_size: int, seed: int = 0, start_batch: int = 0) -> None:
        self.sampler, self.batch_size, self.seed, self.start_batch = sampler, int(batch_size), int(seed), start_batch
        self.rank = int(getattr(sampler, "rank", 0))  # DistributedSampler's data-parallel rank
        self.epoch_size = len(sampler)  # per-rank samples per epoch
        if self.epoch_size == 0:
            raise ValueError("the training sampler is empty: the dataset has no sample for this rank")

    def _epoch_indices(self, epoch: int) -> list[int]:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        return list(iter(self.sampler))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        # Batches are cut from the concatenation of epochs (drop_last within an epoch would starve tiny datasets
        # whose size is below the batch size); position p of the stream is epoch p // E, offset p % E.
        position = self.start_batch * self.batch_size
        epoch, offset = divmod(position, self.epoch_size)
        indices = self._epoch_indices(epoch)
        batch: list[tuple[int, int]] = []
        while True:
            if offset == len(indices):
                epoch, offset = epoch + 1, 0
                indices = self._epoch_indices(epoch)
            batch.append((indices[offset], (self.seed * 1_000_003 + self.rank) * 1_000_000_007 + position))
            offset, position = offset + 1, position + 1
            if len(batch) == self.batch_size:
                yield batch
                batch = []

    def __len__(self) -> int:  # DataLoader only needs this for len(loader); the stream is endless
        return 2**62


class SeededDataset(torch.utils.data.Dataset):
    """Wraps a map-style dataset; items are addressed by (index, seed) and loaded under that seed."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        seed %= 2**32
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        return self.dataset[index]


LOADER_KEYS = ("batch_size", "num_workers", "pin_memory", "persistent_workers", "prefetch_factor", "collate_fn")


def build_train_loader(
    loader_cfg: Any, seed: int, start_batch: int, context_parallel_size: int = 1
) -> tuple[DataLoader, torch.utils.data.Dataset]:
    """DataLoader from the `dataloader_train` config node (see module docstring); returns (loader, dataset).
    With context parallelism the ranks of one CP group must read the same samples, so our `get_sampler` is given
    `context_parallel_size` (it then shards over data-parallel ranks only)."""
    cfg = dict(_to_container(loader_cfg))
    if "dataset" not in cfg:
        raise ValueError("dataloader_train has no `dataset`: set dataloader_train=L(DataLoader)(dataset=..., ...)")
    dataset = instantiate(cfg["dataset"])
    if "sampler" in cfg and cfg["sampler"] is not None:
        extra = {}
        if cfg["sampler"].get("_target_") == "cosmos_predict2.data.dataset.get_sampler":
            extra["context_parallel_size"] = context_parallel_size
        # the same dataset object, not a second copy built from the sampler's own `dataset` node
        sampler = instantiate(cfg["sampler"], dataset=dataset, **extra)
    else:
        from cosmos_predict2.data import get_sampler

        sampler = get_sampler(dataset, context_parallel_size=context_parallel_size)
    kwargs = {k: cfg[k] for k in LOADER_KEYS if k in cfg and cfg[k] is not None}
    batch_size = int(kwargs.pop("batch_size", 1))
    if kwargs.get("num_workers", 0) == 0:
        kwargs.pop("persistent_workers", None)
        kwargs.pop("prefetch_factor", None)
    if "collate_fn" in kwargs:
        kwargs["collate_fn"] = instantiate(kwargs["collate_fn"])
    if kwargs.get("pin_memory") and not torch.cuda.is_available():
        kwargs["pin_memory"] = False  # pinning needs an accelerator; avoid torch's warning on CPU runs
    batch_sampler = ResumableBatchSampler(sampler, batch_size, seed=seed, start_batch=start_batch)
    return DataLoader(SeededDataset(dataset), batch_sampler=batch_sampler, **kwargs), dataset


__all__ = ["ResumableBatchSampler", "SeededDataset", "build_train_loader"]
