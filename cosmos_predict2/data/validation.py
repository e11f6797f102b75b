"""One pass over a dataset folder that checks every video/meta/embedding triple and reports all problems at once."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cosmos_predict2.data.video import VideoReadError, check_video_decodes, probe_video
from cosmos_predict2.text.embeddings import EmbeddingFileError, load_embedding_pickle
from cosmos_predict2.text.prompt_files import PromptFileError, read_prompt

VIDEO_SUFFIXES = (".mp4",)
ON_INVALID_CHOICES = ("raise", "skip")


def check_num_frames(num_frames: int, name: str = "num_frames") -> None:
    """Raise ValueError unless num_frames is 4k+1 (the Wan VAE's frame count: docs/reference.md); `name` is the
    flag or config key the user set, so the message names what to change."""
    if num_frames >= 1 and (num_frames - 1) % 4 == 0:
        return
    lower = max(1, 4 * ((num_frames - 1) // 4) + 1)
    setting = f"{name} {num_frames}" if name.startswith("--") else f"{name}={num_frames}"
    raise ValueError(
        f"{setting} is not 4k+1 (1, 5, 9, ..., 93: the VAE keeps the first frame and packs every further 4 frames "
        f"into one latent frame); the nearest valid values are {lower} and {lower + 4}"
    )


@dataclass
class SampleFiles:
    """The files of one training sample (docs/reference.md §5 layout)."""

    stem: str
    video: Path
    meta: Path
    embedding: Path
    num_frames: int | None = None  # filled in by validation (from the container header)
    fps: float | None = None


@dataclass(frozen=True)
class DatasetProblem:
    path: Path
    message: str

    def __str__(self) -> str:
        return self.message if str(self.path) in self.message else f"{self.path}: {self.message}"


@dataclass
class ValidationReport:
    dataset_dir: Path
    valid: list[SampleFiles] = field(default_factory=list)
    problems: list[DatasetProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = f"{self.dataset_dir}: {len(self.valid)} valid sample(s), {len(self.problems)} problem(s)"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])


class DatasetValidationError(ValueError):
    """Raised with the full list of problems when validation fails in on_invalid="raise" mode."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(
            report.summary() + "\nFix or remove these files, or pass on_invalid='skip' to train on the valid ones."
        )
        self.report = report


def dataset_paths(dataset_dir: Path) -> tuple[Path, Path, Path]:
    return dataset_dir / "videos", dataset_dir / "metas", dataset_dir / "t5_xxl"


def list_samples(dataset_dir: str | os.PathLike) -> list[SampleFiles]:
    """Every video in `videos/`, sorted, with the meta and embedding paths it should have (existing or not)."""
    dataset_dir = Path(dataset_dir)
    videos_dir, metas_dir, emb_dir = dataset_paths(dataset_dir)
    if not videos_dir.is_dir():
        raise FileNotFoundError(f"{videos_dir} does not exist: a dataset needs videos/*.mp4, metas/*.txt, t5_xxl/")
    videos = sorted(p for p in videos_dir.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    return [SampleFiles(v.stem, v, metas_dir / f"{v.stem}.txt", emb_dir / f"{v.stem}.pickle") for v in videos]


def _orphans(dataset_dir: Path, stems: set[str]) -> list[DatasetProblem]:
    _, metas_dir, emb_dir = dataset_paths(dataset_dir)
    problems = []
    for folder, pattern, kind in ((metas_dir, "*.txt", "prompt"), (emb_dir, "*.pickle", "embedding")):
        for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
            if path.stem not in stems:
                problems.append(DatasetProblem(path, f"{kind} file has no matching video videos/{path.stem}.mp4"))
    return problems


def _decode_ranges(total: int, num_frames: int, decode: str) -> list[tuple[int, int]]:
    """(start, count) ranges to decode: every frame, or the first and the last window (merged when they touch)."""
    if decode == "full" or total <= 2 * num_frames:
        return [(0, total)]
    return [(0, num_frames), (total - num_frames, num_frames)]


def _check_sample(sample: SampleFiles, num_frames: int, decode: str) -> tuple[list[DatasetProblem], int | None]:
    """Problems of one triple, and the embedding width when the embedding is readable."""
    problems = []
    if not sample.meta.exists():
        problems.append(DatasetProblem(sample.meta, f"missing prompt file for video {sample.video.name}"))
    else:
        try:
            read_prompt(sample.meta)
        except PromptFileError as e:
            problems.append(DatasetProblem(sample.meta, str(e)))
    embed_dim = None
    try:
        embed_dim = int(load_embedding_pickle(sample.embedding).shape[1])
    except EmbeddingFileError as e:
        problems.append(DatasetProblem(sample.embedding, str(e)))
    try:
        info = probe_video(sample.video)
        sample.num_frames, sample.fps = info.num_frames, info.fps
        if info.num_frames < num_frames:
            problems.append(
                DatasetProblem(sample.video, f"only {info.num_frames} frames, need at least num_frames={num_frames}")
            )
        elif decode != "none":
            # Catches files whose header is fine but whose data is not, e.g. a truncated file with its index
            # at the front: the header claims every frame, decoding the last window finds them missing.
            for start, count in _decode_ranges(info.num_frames, num_frames, decode):
                check_video_decodes(sample.video, start, count)
    except VideoReadError as e:
        problems.append(DatasetProblem(sample.video, str(e)))
    return problems, embed_dim


def validate_dataset(
    dataset_dir: str | os.PathLike,
    num_frames: int,
    check_decode: bool = True,
    embed_dim: int | None = None,
    full: bool = False,
) -> ValidationReport:
    """Check every video/meta/embedding triple; never raises for bad files, returns all problems in the report.

    num_frames: the training window (4k+1; ValueError otherwise). Each video is decoded over its first and its
    last window of num_frames frames (the ends of the range training samples from; a truncated file fails the
    last one), over every frame with full=True, or not at all with check_decode=False (headers only).
    embed_dim: expected embedding width (1024 for T5-11B); by default the width most files have, so a
    single odd file is reported instead of failing later in collation.
    """
    check_num_frames(num_frames)
    decode = "full" if full else "windows" if check_decode else "none"
    dataset_dir = Path(dataset_dir)
    report = ValidationReport(dataset_dir)
    samples = list_samples(dataset_dir)
    if not samples:
        report.problems.append(DatasetProblem(dataset_dir / "videos", "no .mp4 videos found"))
    checked = []
    for sample in samples:
        problems, dim = _check_sample(sample, num_frames, decode)
        report.problems.extend(problems)
        checked.append((sample, problems, dim))
    dims = Counter(dim for _, _, dim in checked if dim is not None)
    expected_dim = embed_dim or (dims.most_common(1)[0][0] if dims else None)
    for sample, problems, dim in checked:
        if dim is not None and dim != expected_dim:
            msg = f"embedding width {dim} differs from the expected {expected_dim}; regenerate it with the same T5"
            problems.append(DatasetProblem(sample.embedding, msg))
            report.problems.append(problems[-1])
        if not problems:
            report.valid.append(sample)
    report.problems.extend(_orphans(dataset_dir, {s.stem for s in samples}))
    return report
