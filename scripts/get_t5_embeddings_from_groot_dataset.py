"""GR00T GR1 data: write `metas/<stem>.txt` (prefix + caption) and `t5_xxl/<stem>.pickle` for every row of the
dataset's metadata.csv (`video_filename,caption`), as NVIDIA's guide does for the GR1-100 videos.

    python -m scripts.get_t5_embeddings_from_groot_dataset --dataset_path datasets/benchmark_train/gr1

Captions in double quotes are unquoted; the prompt is `--prompt_prefix` + caption. Existing pickles that load are
skipped, invalid ones re-embedded (REPLACED); rows without a caption are reported (FAILED, exit code 1).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.text.prompt_files import (  # noqa: E402
    EmbeddingJob,
    EmbeddingRunReport,
)
from scripts.get_t5_embeddings import add_t5_arguments, encode_and_report  # noqa: E402

DEFAULT_PREFIX = "The robot arm is performing a task. "  # the reference's --prompt_prefix


def read_metadata(meta_csv: Path) -> list[tuple[str, str]]:
    """(video stem, caption) of each row after the header; the caption is everything after the first comma."""
    rows = []
    with open(meta_csv, encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if i == 0 or not row:
                continue
            rows.append((Path(row[0]).stem, ",".join(row[1:]).strip()))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_path", type=Path, default=Path("datasets/benchmark_train/gr1"))
    parser.add_argument("--prompt_prefix", default=DEFAULT_PREFIX, help="prepended to every caption")
    parser.add_argument("--meta_csv", type=Path, default=None, help="default: DATASET_PATH/metadata.csv")
    add_t5_arguments(parser)
    args = parser.parse_args(argv)
    meta_csv = args.meta_csv or args.dataset_path / "metadata.csv"
    if not meta_csv.is_file():
        print(f"error: {meta_csv} does not exist (the GR1-100 download puts metadata.csv next to videos/)",
              file=sys.stderr)  # fmt: skip
        return 2
    metas_dir = args.dataset_path / "metas"
    metas_dir.mkdir(parents=True, exist_ok=True)
    report = EmbeddingRunReport()
    jobs = []
    for stem, caption in read_metadata(meta_csv):
        if not caption:
            report.failed.append(f"{meta_csv}: row {stem!r} has no caption")
            continue
        prompt = args.prompt_prefix + caption
        (metas_dir / f"{stem}.txt").write_text(prompt, encoding="utf-8")
        job = EmbeddingJob(prompt, args.dataset_path / "t5_xxl" / f"{stem}.pickle")
        if report.check_existing(job):
            jobs.append(job)
    return encode_and_report(jobs, args, report)


if __name__ == "__main__":
    sys.exit(main())
