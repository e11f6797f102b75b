"""Prompt files (`metas/<stem>.txt`) and batch embedding of them into `t5_xxl/<stem>.pickle`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from cosmos_predict2.text.embeddings import EmbeddingFileError, load_embedding_pickle, save_embedding_pickle


class PromptFileError(ValueError):
    """A prompt file cannot be read as UTF-8 text or is empty."""


def read_prompt(path: str | os.PathLike) -> str:
    """Read a `metas/*.txt` prompt (UTF-8, surrounding whitespace stripped); raises PromptFileError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PromptFileError(f"{path}: cannot read prompt file ({e})") from e
    try:
        text = raw.decode("utf-8-sig")  # tolerate a BOM written by some editors
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{path}: prompt file is not valid UTF-8 ({e}); re-save it as UTF-8") from e
    text = text.strip()
    if not any(ch.isprintable() and not ch.isspace() for ch in text):  # also zero-width spaces, BOMs, controls
        raise PromptFileError(
            f"{path}: prompt file is empty (or whitespace only), nothing to embed; write the video's caption into "
            "it, then run `python -m scripts.get_t5_embeddings --dataset_path DIR`"
        )
    return text


def existing_embedding_problem(path: str | os.PathLike) -> str | None:
    """None when `path` is a readable embedding file (through the restricted unpickler), else why it is not:
    an existing file only counts as "already present" when it would load in training."""
    try:
        load_embedding_pickle(path)
    except EmbeddingFileError as e:
        return str(e)
    return None


@dataclass
class EmbeddingJob:
    prompt: str
    output_path: Path
    replaces: str | None = None  # why the existing output_path is invalid and gets re-embedded


@dataclass
class EmbeddingRunReport:
    written: list[Path] = field(default_factory=list)
    skipped_existing: list[Path] = field(default_factory=list)  # existing files that load (verified)
    replaced: list[str] = field(default_factory=list)  # "path: why the old file was invalid", for re-embedded files
    failed: list[str] = field(default_factory=list)  # one human-readable line per file

    def check_existing(self, job: EmbeddingJob) -> bool:
        """True when `job` must be (re-)embedded: its output is missing or invalid (recorded in job.replaces);
        a valid existing output is counted as skipped."""
        if job.replaces is None and job.output_path.exists():
            job.replaces = existing_embedding_problem(job.output_path)
            if job.replaces is None:
                self.skipped_existing.append(job.output_path)
                return False
        return True

    def record_written(self, job: EmbeddingJob) -> None:
        self.written.append(job.output_path)
        if job.replaces is not None:
            self.replaced.append(job.replaces)


def write_embeddings(
    jobs: Sequence[EmbeddingJob], encoder, batch_size: int = 8, report: EmbeddingRunReport | None = None
) -> EmbeddingRunReport:
    """Embed each job's prompt with `encoder` (a T5TextEncoder) in batches; skips outputs that already exist and
    load, re-embeds (and reports) existing outputs that do not."""
    report = report or EmbeddingRunReport()
    todo = [job for job in jobs if report.check_existing(job)]
    with tqdm(total=len(todo), desc="T5 embeddings", unit="prompt") as bar:
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            for job, emb_N_D in zip(batch, encoder.encode_trimmed([j.prompt for j in batch])):
                save_embedding_pickle(job.output_path, emb_N_D)
                report.record_written(job)
            bar.update(len(batch))
    return report


def print_report(report: EmbeddingRunReport) -> int:
    """Print a summary; returns the process exit code (1 when some files could not be processed)."""
    replaced = f" ({len(report.replaced)} replacing invalid existing files)" if report.replaced else ""
    print(
        f"embeddings written: {len(report.written)}{replaced}, already present (skipped): "
        f"{len(report.skipped_existing)}, failed: {len(report.failed)}"
    )
    for line in report.replaced:
        print(f"  REPLACED {line}")
    for line in report.failed:
        print(f"  FAILED {line}")
    return 1 if report.failed else 0
