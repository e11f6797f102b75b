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


def text_fields(embedding_path: Path) -> dict[str, torch.Tensor]:
    emb_L_D, mask_L = load_padded_embedding(embedding_path)
    return {"t5_text_embeddings": emb_L_D, "t5_text_mask": mask_L}


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
