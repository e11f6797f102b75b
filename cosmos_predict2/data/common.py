"""Pieces shared by the video dataset and the cached-latent dataset."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from cosmos_predict2.data.video import VideoReadError
from cosmos_predict2.text.embeddings import EmbeddingFileError, load_padded_embedding


class DataLoadWarning(UserWarning):
    """A sample failed to load during training and was replaced by another one."""


# Errors that mean "this file is bad", as opposed to programming errors, which must still surface.
SAMPLE_ERRORS = (VideoReadError, EmbeddingFileError, OSError, ValueError)


PAYLOAD_KEYS = ("video", "latents")


def sample_dict(
    payload_key: str,
    payload: torch.Tensor,
    embedding_path: Path,
    fps: float,
    num_frames: int,
    video_size: tuple[int, int],
    video_name: str,
) -> dict[str, Any]:
    """The one training sample layout (docs/architecture.md "Data sample"), for videos and cached latents alike:
    `video` uint8 [3, T, H, W] or `latents` float32 [16, t, h, w], then t5_text_embeddings float32 [512, D],
    t5_text_mask int64 [512], fps float, image_size int64 [H, W, H, W], num_frames int, padding_mask float32
    zeros [1, H, W], video_name str. Training tells the two apart by `"latents" in batch`."""
    if payload_key not in PAYLOAD_KEYS:
        raise ValueError(f"payload_key must be one of {PAYLOAD_KEYS}, got {payload_key!r}")
    emb_L_D, mask_L = load_padded_embedding(embedding_path)
    h, w = int(video_size[0]), int(video_size[1])
    return {
        payload_key: payload,
        "t5_text_embeddings": emb_L_D,
        "t5_text_mask": mask_L,
        "fps": float(fps),
        "image_size": torch.tensor([h, w, h, w], dtype=torch.int64),
        "num_frames": int(num_frames),
        "padding_mask": torch.zeros(1, h, w, dtype=torch.float32),
        "video_name": str(video_name),
    }


class RetryingDataset(torch.utils.data.Dataset):
    """Replaces a sample that fails to load by the next good one, with a warning, instead of crashing the run."""

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def _describe(self, index: int) -> str:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not hasattr(self, "_bad_indices"):
            self._bad_indices: set[int] = set()  # per worker process; only avoids retrying known-bad files
        n = len(self)
        for attempt in range(n):
            i = (index + attempt) % n
            if i in self._bad_indices:
                continue
            try:
                return self._load(i)
            except SAMPLE_ERRORS as e:
                self._bad_indices.add(i)
                warnings.warn(f"skipping sample {self._describe(i)}: {e}", DataLoadWarning, stacklevel=2)
        raise RuntimeError(f"every sample of {self._describe(index)}'s dataset failed to load; see the warnings above")
