"""The Video2World training dataset (docs/reference.md §5) and its distributed sampler."""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from cosmos_predict2.data.common import DataLoadWarning, RetryingDataset, sample_dict
from cosmos_predict2.data.validation import (
    ON_INVALID_CHOICES,
    DatasetValidationError,
    SampleFiles,
    check_num_frames,
    list_samples,
    validate_dataset,
)
from cosmos_predict2.data.video import RESIZE_MODES, VideoReadError, load_clip, probe_video


class Dataset(RetryingDataset):
    """`dataset_dir/{videos,metas,t5_xxl}` -> sample dicts (docs/reference.md §5).

    Each item is a contiguous window of `num_frames` frames at a random start (a clip of exactly num_frames
    frames is valid), resized to video_size = (H, W):
        video uint8 [3, T, H, W], t5_text_embeddings float32 [512, D], t5_text_mask int64 [512], fps float,
        image_size int64 [H, W, H, W], num_frames int, padding_mask float32 zeros [1, H, W], video_name str.
    With use_cached_latents=True the items come from `dataset_dir/latents` (see scripts/cache_latents.py) and
    carry `latents` float32 [16, t, h, w] instead of `video`; the cache must have been built with the same
    resize_mode (and, when given, the VAE `vae_identity`); `check_tokenizer(path)` compares the tokenizer weights.

    Args:
        num_frames: frames per window, 4k+1 (ValueError otherwise, naming dataloader_train.dataset.num_frames).
        resize_mode: "cover" (scale to cover, centre-crop; default) or "stretch" (the reference's plain resize).
        validate: check every file once up front (see validate_dataset: headers, prompts, embeddings, and a
            decode of each video's first and last window, so truncated files are left out before training).
        on_invalid: "raise" (stop with the list of all problems) or "skip" (warn and train on the valid files).
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        num_frames: int,
        video_size: tuple[int, int] | list[int],
        resize_mode: str = "cover",
        validate: bool = True,
        on_invalid: str = "raise",
        use_cached_latents: bool = False,
        vae_identity: str | None = None,
    ) -> None:
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        if on_invalid not in ON_INVALID_CHOICES:
            raise ValueError(f"on_invalid must be one of {ON_INVALID_CHOICES}, got {on_invalid!r}")
        check_num_frames(int(num_frames), "dataloader_train.dataset.num_frames")
        self.dataset_dir = Path(dataset_dir)
        self.num_frames = int(num_frames)
        self.video_size = (int(video_size[0]), int(video_size[1]))
        self.resize_mode = resize_mode
        self._cache = None
        if use_cached_latents:
            from cosmos_predict2.data.latent_cache import CachedLatentDataset

            self._cache = CachedLatentDataset(
                self.dataset_dir, self.num_frames, self.video_size, vae_identity, resize_mode=resize_mode
            )
            self.samples: list[SampleFiles] = []
            return
        self.samples = self._select_samples(validate, on_invalid)

    def _select_samples(self, validate: bool, on_invalid: str) -> list[SampleFiles]:
        if not validate:
            samples = list_samples(self.dataset_dir)
        else:
            report = validate_dataset(self.dataset_dir, self.num_frames)
            if report.problems and on_invalid == "raise":
                raise DatasetValidationError(report)
            if report.problems:
                warnings.warn(f"skipping invalid files:\n{report.summary()}", DataLoadWarning, stacklevel=3)
            samples = report.valid
        if not samples:
            raise ValueError(f"{self.dataset_dir}: no usable samples (need videos/*.mp4 with metas/ and t5_xxl/)")
        return samples

    def check_tokenizer(self, tokenizer_path: str | os.PathLike) -> None:
        """With cached latents: raise StaleLatentCacheError unless they were encoded from `tokenizer_path`'s weights
        (sha256, no VAE loaded). Videos are encoded by the training model itself, so there is nothing to check."""
        if self._cache is not None:
            self._cache.check_tokenizer(tokenizer_path)

    def __len__(self) -> int:
        return len(self._cache) if self._cache is not None else len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache[index]
        return super().__getitem__(index)

    def _describe(self, index: int) -> str:
        return str(self.samples[index].video)

    def _load(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        if sample.num_frames is None:  # not validated up front: probe now
            info = probe_video(sample.video)
            sample.num_frames, sample.fps = info.num_frames, info.fps
        if sample.num_frames < self.num_frames:
            raise VideoReadError(f"{sample.video}: only {sample.num_frames} frames, need {self.num_frames}")
        # Python's `random` is reseeded per DataLoader worker by torch, so workers draw different windows.
        start = random.randint(0, sample.num_frames - self.num_frames)
        video_3_T_H_W, fps = load_clip(sample.video, start, self.num_frames, self.video_size, self.resize_mode)
        return sample_dict("video", video_3_T_H_W, sample.embedding, fps, self.num_frames, self.video_size, sample.stem)


def get_sampler(
    dataset: torch.utils.data.Dataset,
    num_replicas: int | None = None,
    rank: int | None = None,
    context_parallel_size: int = 1,
) -> DistributedSampler:
    """DistributedSampler(shuffle=True, seed=0) over the data-parallel group (docs/reference.md §5).

    Without torch.distributed initialised this is one replica at rank 0. With context parallelism, the ranks of
    one CP group (assumed contiguous: ranks r*cp .. r*cp+cp-1) must read the same sample, so the data-parallel
    rank is global_rank // context_parallel_size. Call `sampler.set_epoch(epoch)` each epoch to reshuffle.
    """
    if num_replicas is None or rank is None:
        if dist.is_available() and dist.is_initialized():
            world, global_rank = dist.get_world_size(), dist.get_rank()
        else:
            world, global_rank = 1, 0
        if world % context_parallel_size:
            raise ValueError(f"world size {world} is not divisible by context_parallel_size {context_parallel_size}")
        num_replicas = world // context_parallel_size if num_replicas is None else num_replicas
        rank = global_rank // context_parallel_size if rank is None else rank
    return DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=0)
