"""Check every video/meta/embedding triple of a dataset folder and list all problems at once.

    python -m scripts.validate_dataset --dataset_path datasets/my_set --num_frames 93 [--full]

Each video is decoded over its first and its last window of --num_frames frames (the ends of the range training
draws its windows from, so a truncated file is found); --full decodes every frame, --no_decode only the headers.
Exit code 0 when the dataset is clean, 1 when problems were found, 2 for an invalid flag.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.data.validation import check_num_frames, validate_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_path", required=True, type=Path)
    parser.add_argument("--num_frames", type=int, default=93, help="training window, 4k+1 (default 93)")
    parser.add_argument("--embed_dim", type=int, default=None, help="expected embedding width (1024 for T5-11B)")
    decode = parser.add_mutually_exclusive_group()
    decode.add_argument("--full", action="store_true", help="decode every frame (slower, finds damage mid-file)")
    decode.add_argument("--no_decode", action="store_true", help="only read headers (faster, misses bad data)")
    args = parser.parse_args(argv)
    try:
        check_num_frames(args.num_frames, "--num_frames")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = validate_dataset(args.dataset_path, args.num_frames, not args.no_decode, args.embed_dim, args.full)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
