"""A resumable training data stream built from the `dataloader_train` config node.

The config describes the loader the guide's way (`L(DataLoader)(dataset=L(Dataset)(...), sampler=L(get_sampler)(
dataset=...), batch_size=2, drop_last=True, num_workers=8, pin_memory=True)`). `build_train_loader` builds the
dataset, then the configured sampler over that same dataset object with the data-parallel rank and size
(`num_replicas`, `rank`), then the configured loader class with every other key the user set, except that
batching is done by:

  - `ResumableBatchSampler`: epochs of the configured (distributed) sampler laid end to end, with
    `sampler.set_epoch(e)` per epoch, cut into batches; it starts at any batch index, so resuming at iteration n
    continues with batch n exactly (no replay of the consumed batches is needed);
  - `SeededDataset`: reseeds Python's `random`, NumPy and torch before every item from (seed, data-parallel rank,
    position in the stream), so random windows are identical whichever worker loads a sample and however the run
    was split.

Keys this stream cannot honour (`shuffle`, `drop_last`, `generator`, `in_order=False`, worker options without
workers) are accepted and each logs one warning saying why it has no effect; unknown keys raise TypeError as the
loader class would.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from cosmos_predict2.configs.lazy import TARGET_KEY, _to_container, instantiate, is_lazy, locate

log = logging.getLogger(__name__)


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Infinite stream of batches of (dataset index, item seed) pairs starting at batch `start_batch`."""

    def __init__(
        self, sampler: Sampler, batch_size: int, seed: int = 0, start_batch: int = 0, rank: int | None = None
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.sampler, self.batch_size, self.seed, self.start_batch = sampler, int(batch_size), int(seed), start_batch
        # The data-parallel rank enters the item seeds (default: DistributedSampler's rank).
        self.rank = int(getattr(sampler, "rank", 0) if rank is None else rank)
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


# Keys the resumable stream replaces: setting them to anything but DataLoader's default has no effect.
UNUSED_KEYS = {
    "shuffle": "the order comes from the sampler (get_sampler shuffles; configure the sampler instead)",
    "drop_last": "batches are cut from epochs laid end to end, so there is never a short last batch to drop",
    "generator": "every item is loaded under a seed derived from (trainer.seed, data-parallel rank, stream position)",
    "in_order": "batches must arrive in stream order so that resuming at iteration n continues with batch n",
}
# DataLoader options that only matter with worker processes.
WORKER_KEYS = ("persistent_workers", "prefetch_factor", "multiprocessing_context", "worker_init_fn", "timeout")
BUILT_KEYS = ("dataset", "sampler", "batch_size")  # built here and handed to the loader in another form


def _loader_class(cfg: dict[str, Any]) -> Callable[..., DataLoader]:
    target = cfg.get(TARGET_KEY, DataLoader)
    return locate(target) if isinstance(target, str) else target


def _defaults(fn: Callable) -> dict[str, Any]:
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def _loader_kwargs(cfg: dict[str, Any], loader_class: Callable) -> dict[str, Any]:
    """The user's loader keys minus the built and the unused ones, with one warning per unused key.
    Unknown keys raise TypeError here, before the dataset is built, as the loader class itself would."""
    if cfg.get("batch_sampler") is not None:
        raise ValueError(
            "dataloader_train.batch_sampler cannot be used: training batches the configured sampler itself so that "
            "a resume continues with the exact next batch; configure `sampler` and `batch_size` instead"
        )
    given = {k: v for k, v in cfg.items() if k != TARGET_KEY and v is not None}
    inspect.signature(loader_class).bind_partial(**given)  # TypeError: unexpected keyword argument 'x'
    defaults = _defaults(DataLoader.__init__)
    kwargs = {k: v for k, v in given.items() if k not in BUILT_KEYS and k != "batch_sampler"}
    for key, why in UNUSED_KEYS.items():
        if key in kwargs and kwargs.pop(key) != defaults.get(key):
            log.warning(f"dataloader_train.{key}={cfg[key]!r} has no effect: {why}")
    if not kwargs.get("num_workers", 0):
        for key in WORKER_KEYS:
            if key in kwargs and kwargs.pop(key) != defaults.get(key):
                log.warning(
                    f"dataloader_train.{key}={cfg[key]!r} has no effect: num_workers is 0 (no worker processes)"
                )
    if kwargs.get("pin_memory") and not torch.cuda.is_available():
        kwargs["pin_memory"] = False  # pinning needs an accelerator; avoid torch's warning on CPU runs
    return {k: instantiate(v) for k, v in kwargs.items()}  # collate_fn, worker_init_fn may be lazy nodes


def build_sampler(sampler_cfg: Any, dataset: torch.utils.data.Dataset, dp_rank: int, dp_size: int) -> Sampler:
    """The configured sampler over `dataset` (the same object, not a copy built from the sampler's own `dataset`
    node), told the data-parallel rank and size through its `num_replicas`/`rank` parameters (DistributedSampler,
    get_sampler). No sampler configured: get_sampler. A sampler without those parameters is only valid with one
    data-parallel rank (otherwise every rank would read the same samples)."""
    if sampler_cfg is None:
        from cosmos_predict2.data import get_sampler

        return get_sampler(dataset, num_replicas=dp_size, rank=dp_rank)
    if not is_lazy(sampler_cfg):
        raise TypeError(f"dataloader_train.sampler must be a lazy node L(SamplerClass)(...), got {sampler_cfg!r}")
    target = locate(sampler_cfg[TARGET_KEY]) if isinstance(sampler_cfg[TARGET_KEY], str) else sampler_cfg[TARGET_KEY]
    params = inspect.signature(target).parameters
    overrides: dict[str, Any] = {name: dataset for name in ("dataset", "data_source") if name in params}
    if "num_replicas" in params and "rank" in params:
        for name, value in (("num_replicas", dp_size), ("rank", dp_rank)):
            if sampler_cfg.get(name) not in (None, value):
                raise ValueError(
                    f"dataloader_train.sampler.{name}={sampler_cfg[name]} contradicts the data-parallel layout "
                    f"({name} {value}); leave it unset: training passes the data-parallel rank and size"
                )
            overrides[name] = value
    elif dp_size > 1:
        raise ValueError(
            f"dataloader_train.sampler {sampler_cfg[TARGET_KEY]} takes no num_replicas/rank, so all {dp_size} "
            "data-parallel ranks would read the same samples; use get_sampler or DistributedSampler"
        )
    return instantiate(sampler_cfg, **overrides)


def check_tokenizer(dataset: torch.utils.data.Dataset, tokenizer_path: str) -> None:
    """Let every cached-latent dataset inside `dataset` (ConcatDataset, Subset included) compare the sha256 of the
    tokenizer weights it was encoded with to `tokenizer_path`; raises StaleLatentCacheError on a mismatch."""
    if hasattr(dataset, "check_tokenizer"):
        dataset.check_tokenizer(tokenizer_path)
    for child in getattr(dataset, "datasets", None) or [getattr(dataset, "dataset", None)]:
        if isinstance(child, torch.utils.data.Dataset):
            check_tokenizer(child, tokenizer_path)


def build_train_loader(
    loader_cfg: Any,
    *,
    seed: int,
    start_batch: int,
    dp_rank: int = 0,
    dp_size: int = 1,
    tokenizer_path: str | None = None,
    heldout: Any = None,
) -> tuple[DataLoader, torch.utils.data.Dataset]:
    """The training loader from the `dataloader_train` node (see module docstring); returns (loader, dataset).

    dp_rank, dp_size: this rank's data-parallel rank and the number of data-parallel ranks (a context-parallel
    group of consecutive ranks shares one). tokenizer_path: the VAE weights training would encode with; cached
    latents must have been encoded from the same file (checked by sha256, without loading the VAE).
    heldout (data/heldout.HeldoutSplit): leave its held-out clips out; the returned dataset is then a Subset of
    the whole folder (validation reads the rest of it).
    """
    if not 0 <= dp_rank < dp_size:
        raise ValueError(f"dp_rank must be in [0, dp_size={dp_size}), got {dp_rank}")
    cfg = dict(_to_container(loader_cfg))
    if cfg.get("dataset") is None:
        raise ValueError("dataloader_train has no `dataset`: set dataloader_train=L(DataLoader)(dataset=..., ...)")
    loader_class = _loader_class(cfg)
    kwargs = _loader_kwargs(cfg, loader_class)
    dataset = instantiate(cfg["dataset"])
    if heldout is not None:
        dataset = heldout.train_part(dataset)
    if tokenizer_path is not None:
        check_tokenizer(dataset, tokenizer_path)
    sampler = build_sampler(cfg.get("sampler"), dataset, dp_rank, dp_size)
    batch_size = int(cfg.get("batch_size") or 1)
    batch_sampler = ResumableBatchSampler(sampler, batch_size, seed=seed, start_batch=start_batch, rank=dp_rank)
    return loader_class(SeededDataset(dataset), batch_sampler=batch_sampler, **kwargs), dataset


__all__ = ["ResumableBatchSampler", "SeededDataset", "build_sampler", "build_train_loader", "check_tokenizer"]
