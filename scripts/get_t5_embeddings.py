"""Write `DIR/t5_xxl/<stem>.pickle` for every `DIR/metas/<stem>.txt` (docs/reference.md §4).

    python -m scripts.get_t5_embeddings --dataset_path datasets/my_set [--t5_path checkpoints/google-t5/t5-11b]

As in the reference script, `--cache_dir` names the T5 folder (same as `--t5_path`) and `--max_length` is the
token limit per prompt (512; longer prompts are truncated, and the pickles hold at most that many rows).

Existing pickles that load (restricted unpickler, reference format) are skipped; unreadable, unsafe or malformed
ones are re-embedded and listed as REPLACED; empty or unreadable prompt files are reported at the end (exit code 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cosmos_predict2.text import (  # noqa: E402
    DEFAULT_T5_PATH,
    MAX_TEXT_TOKENS,
    T5CheckpointNotFoundError,
    T5TextEncoder,
)
from cosmos_predict2.text.prompt_files import (  # noqa: E402
    EmbeddingJob,
    EmbeddingRunReport,
    PromptFileError,
    print_report,
    read_prompt,
    write_embeddings,
)


def _max_length(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_TEXT_TOKENS:
        raise argparse.ArgumentTypeError(
            f"{value} is not in 1..{MAX_TEXT_TOKENS}: the DiT's cross-attention reads {MAX_TEXT_TOKENS} text tokens "
            f"(training and inference pad or truncate every embedding to {MAX_TEXT_TOKENS} rows)"
        )
    return value


def add_t5_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--t5_path", "--cache_dir", dest="t5_path", default=DEFAULT_T5_PATH,
                        help="local T5 folder (google-t5/t5-11b); --cache_dir is the reference script's name for it")
    parser.add_argument("--max_length", type=_max_length, default=MAX_TEXT_TOKENS,
                        help=f"tokens per prompt (default {MAX_TEXT_TOKENS}, the reference's); longer prompts are "
                             "truncated")
    parser.add_argument("--batch_size", type=int, default=8, help="prompts per T5 forward")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")


def build_encoder(args: argparse.Namespace) -> T5TextEncoder:
    return T5TextEncoder(args.t5_path, dtype=getattr(torch, args.dtype), device=args.device,
                         max_length=args.max_length)


def collect_jobs(dataset_path: Path, report: EmbeddingRunReport) -> list[EmbeddingJob]:
    metas_dir = dataset_path / "metas"
    if not metas_dir.is_dir():
        raise FileNotFoundError(f"{metas_dir} does not exist: the dataset needs one metas/<stem>.txt per video")
    out_dir = dataset_path / "t5_xxl"
    jobs = []
    for meta in sorted(metas_dir.glob("*.txt")):
        try:
            job = EmbeddingJob(read_prompt(meta), out_dir / f"{meta.stem}.pickle")
        except PromptFileError as e:  # also with an existing pickle: training would reject this sample
            report.failed.append(str(e))
            continue
        if report.check_existing(job):
            jobs.append(job)
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_path", required=True, type=Path)
    add_t5_arguments(parser)
    args = parser.parse_args(argv)
    report = EmbeddingRunReport()
    return encode_and_report(collect_jobs(args.dataset_path, report), args, report)


def encode_and_report(jobs: list[EmbeddingJob], args: argparse.Namespace, report: EmbeddingRunReport) -> int:
    """Load T5 only when there is something to embed, write every job's pickle, print the summary; exit code."""
    if jobs:
        try:
            encoder = build_encoder(args)
        except T5CheckpointNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        write_embeddings(jobs, encoder, args.batch_size, report)
    return print_report(report)


if __name__ == "__main__":
    sys.exit(main())
