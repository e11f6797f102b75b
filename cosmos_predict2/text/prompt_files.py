"""Prompt files (`metas/<stem>.txt`) and batch embedding of them into `t5_xxl/<stem>.pickle`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from cosmos_predict2.text.embeddings import save_embedding_pickle


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
    if not text:
        raise PromptFileError(f"{path}: prompt file is empty")
    return text


@dataclass
class EmbeddingJob:
    prompt: str
    output_path: Path


@dataclass
class EmbeddingRunReport:
    written: list[Path] = field(default_factory=list)
    skipped_existing: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one human-readable line per file


def write_embeddings(
    jobs: Sequence[EmbeddingJob], encoder, batch_size: int = 8, report: EmbeddingRunReport | None = None
) -> EmbeddingRunReport:
    """Embed each job's prompt with `encoder` (a T5TextEncoder) in batches; skips outputs that already exist."""
    report = report or EmbeddingRunReport()
    todo = []
    for job in jobs:
        if job.output_path.exists():
            report.skipped_existing.append(job.output_path)
        else:
            todo.append(job)
    with tqdm(total=len(todo), desc="T5 embeddings", unit="prompt") as bar:
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            for job, emb_N_D in zip(batch, encoder.encode_trimmed([j.prompt for j in batch])):
                save_embedding_pickle(job.output_path, emb_N_D)
                report.written.append(job.output_path)
            bar.update(len(batch))
    return report


def print_report(report: EmbeddingRunReport) -> int:
    """Print a summary; returns the process exit code (1 when some files could not be processed)."""
    print(
        f"embeddings written: {len(report.written)}, already present (skipped): {len(report.skipped_existing)}, "
        f"failed: {len(report.failed)}"
    )
    for line in report.failed:
        print(f"  FAILED {line}")
    return 1 if report.failed else 0
