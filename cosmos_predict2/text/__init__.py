"""T5 text encoder and the `t5_xxl/*.pickle` embedding files (docs/reference.md §4)."""

from cosmos_predict2.text.embeddings import (
    MAX_TEXT_TOKENS,
    EmbeddingFileError,
    load_embedding_pickle,
    load_padded_embedding,
    pad_embedding,
    save_embedding_pickle,
)
from cosmos_predict2.text.t5_encoder import DEFAULT_T5_PATH, T5CheckpointNotFoundError, T5TextEncoder, check_t5_folder

__all__ = [
    "DEFAULT_T5_PATH",
    "MAX_TEXT_TOKENS",
    "EmbeddingFileError",
    "T5CheckpointNotFoundError",
    "T5TextEncoder",
    "check_t5_folder",
    "load_embedding_pickle",
    "load_padded_embedding",
    "pad_embedding",
    "save_embedding_pickle",
]
