"""Video decoding (PyAV), the Video2World dataset, validation, and cached latents (docs/reference.md §5)."""

from cosmos_predict2.data.common import DataLoadWarning
from cosmos_predict2.data.dataset import Dataset, get_sampler
from cosmos_predict2.data.latent_cache import (
    CachedLatentDataset,
    StaleLatentCacheError,
    build_latent_cache,
    cache_dir,
    window_starts,
)
from cosmos_predict2.data.validation import (
    DatasetProblem,
    DatasetValidationError,
    SampleFiles,
    ValidationReport,
    validate_dataset,
)
from cosmos_predict2.data.video import (
    VideoInfo,
    VideoReadError,
    load_clip,
    probe_video,
    read_video_window,
    resize_video,
    write_video,
)

__all__ = [
    "CachedLatentDataset",
    "DataLoadWarning",
    "Dataset",
    "DatasetProblem",
    "DatasetValidationError",
    "SampleFiles",
    "StaleLatentCacheError",
    "ValidationReport",
    "VideoInfo",
    "VideoReadError",
    "build_latent_cache",
    "cache_dir",
    "get_sampler",
    "load_clip",
    "probe_video",
    "read_video_window",
    "resize_video",
    "validate_dataset",
    "window_starts",
    "write_video",
]
