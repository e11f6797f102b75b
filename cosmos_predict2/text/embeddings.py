"""T5 embedding files `t5_xxl/<stem>.pickle` (docs/reference.md §4), read without executing code.

The file format is the reference's: a Python list of length 1 holding one numpy float16 array
[n_tokens, D] (D = 1024 for T5-11B), trimmed (no padding rows). Pickle can run arbitrary code on load
(docs/reference.md §12), so the reader uses a restricted unpickler that only rebuilds that structure.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from cosmos_predict2.io import atomic_write

MAX_TEXT_TOKENS = 512

# The only globals a numpy-array pickle needs. Anything else (os.system, builtins.eval, ...) is refused.
# numpy 2 writes `numpy._core.multiarray`, numpy 1 `numpy.core.multiarray`; accept both spellings.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),  # pickle protocol 5 (Python 3.14's default) stores arrays this way
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("_codecs", "encode"),  # protocols 2-3 store raw bytes as latin-1 text; only that use is allowed
    ("numpy", "dtype"),
}
_ALLOWED_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


class EmbeddingFileError(ValueError):
    """An embedding pickle is missing, unreadable, unsafe, or not in the reference format."""


def _numpy_internal(submodule: str, name: str) -> object:
    # numpy 2 moved `numpy.core` to `numpy._core`; files written by either version name one of the two.
    import importlib

    try:
        module = importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # numpy < 2
        module = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(module, name)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only build lists, numpy arrays and dtypes."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in _ALLOWED_GLOBALS:
            if module == "_codecs":
                return _latin1_encode
            if module == "numpy":
                return np.ndarray if name == "ndarray" else np.dtype
            return _numpy_internal(module.rsplit(".", 1)[-1], name)
        raise pickle.UnpicklingError(
            f"refusing to load global '{module}.{name}': embedding pickles may only contain a list of numpy arrays"
        )


def _read_pickle_restricted(path: Path) -> object:
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise EmbeddingFileError(
            f"{path}: embedding file not found; run `python -m scripts.get_t5_embeddings --dataset_path DIR`"
        ) from e
    except OSError as e:
        raise EmbeddingFileError(f"{path}: cannot read embedding file ({e})") from e
    if not data:
        raise EmbeddingFileError(f"{path}: embedding file is empty (0 bytes); delete it and regenerate it")
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise EmbeddingFileError(f"{path}: unsafe or invalid embedding pickle: {e}") from e
    except Exception as e:  # truncated files raise EOFError, garbage raises many kinds of errors
        raise EmbeddingFileError(f"{path}: cannot unpickle embedding file ({type(e).__name__}: {e})") from e


def load_embedding_pickle(path: str | os.PathLike) -> np.ndarray:
    """Read one embedding file; returns the trimmed array emb_N_D (float16 or float32 as stored).

    Raises EmbeddingFileError naming the file when it is missing, unsafe or malformed.
    """
    path = Path(path)
    obj = _read_pickle_restricted(path)
    if not isinstance(obj, list) or len(obj) != 1:
        kind = f"list of length {len(obj)}" if isinstance(obj, list) else type(obj).__name__
        raise EmbeddingFileError(f"{path}: expected a list holding one array (reference format), got a {kind}")
    emb_N_D = obj[0]
    if not isinstance(emb_N_D, np.ndarray) or emb_N_D.dtype.type not in _ALLOWED_FLOAT_DTYPES:
        raise EmbeddingFileError(f"{path}: expected a numpy float array in the list, got {type(emb_N_D).__name__}")
    if emb_N_D.ndim != 2 or emb_N_D.shape[0] == 0 or emb_N_D.shape[1] == 0:
        raise EmbeddingFileError(f"{path}: expected an array of shape [n_tokens, dim], got {list(emb_N_D.shape)}")
    if emb_N_D.shape[0] > MAX_TEXT_TOKENS:
        raise EmbeddingFileError(f"{path}: {emb_N_D.shape[0]} tokens is more than the maximum {MAX_TEXT_TOKENS}")
    if not np.isfinite(emb_N_D).all():
        raise EmbeddingFileError(f"{path}: embedding contains NaN or inf values; regenerate it")
    return emb_N_D


def save_embedding_pickle(path: str | os.PathLike, emb_N_D: np.ndarray | torch.Tensor) -> None:
    """Write one embedding in the reference format: [float16 array [n_tokens, D]].

    Writes to a temporary file and renames it so an interrupted run never leaves a half-written pickle
    that a later run would skip as "already existing".
    """
    path = Path(path)
    if isinstance(emb_N_D, torch.Tensor):
        emb_N_D = emb_N_D.detach().float().cpu().numpy()
    emb_N_D = np.ascontiguousarray(emb_N_D, dtype=np.float16)
    if emb_N_D.ndim != 2:
        raise ValueError(f"embedding for {path} must be [n_tokens, dim], got shape {list(emb_N_D.shape)}")
    # Protocol 4: readable by every Python the reference supports.
    atomic_write(path, lambda f: pickle.dump([emb_N_D], f, protocol=4))


def pad_embedding(emb_N_D: np.ndarray, max_length: int = MAX_TEXT_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad a trimmed embedding to [max_length, D] (float32) and build its mask [max_length] (int64)."""
    n_tokens, dim = emb_N_D.shape
    n_tokens = min(n_tokens, max_length)
    emb_L_D = torch.zeros(max_length, dim, dtype=torch.float32)
    emb_L_D[:n_tokens] = torch.from_numpy(np.asarray(emb_N_D[:n_tokens], dtype=np.float32))
    mask_L = torch.zeros(max_length, dtype=torch.int64)
    mask_L[:n_tokens] = 1
    return emb_L_D, mask_L


def load_padded_embedding(
    path: str | os.PathLike, max_length: int = MAX_TEXT_TOKENS
) -> tuple[torch.Tensor, torch.Tensor]:
    """load_embedding_pickle + pad_embedding: returns (emb_L_D float32, mask_L int64)."""
    return pad_embedding(load_embedding_pickle(path), max_length)
