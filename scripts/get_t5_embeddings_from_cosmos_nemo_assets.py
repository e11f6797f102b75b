"""Use one prompt for every video (or image) of a folder: writes the missing `metas/<stem>.txt` and
`t5_xxl/<stem>.pickle` files, as in NVIDIA's guide for the cosmos-nemo-assets dataset.

    PYTHONPATH=$(pwd) python scripts/get_t5_embeddings_from_cosmos_nemo_assets.py \
        --dataset_path datasets/cosmos_nemo_assets --prompt "A video of sks teal robot."

T5 flags as in scripts/get_t5_embeddings.py (`--t5_path`/`--cache_dir`, `--max_length` 512).
`--is_image` reads `DIR/images/*.{jpg,jpeg,png,webp}` instead of `DIR/videos/*.mp4`. Existing pickles that do not
load (unreadable, unsafe, malformed) are re-embedded and listed as REPLACED; an existing metas/<stem>.txt that is
empty or unreadable is reported (FAILED) and gets no embedding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.text import T5CheckpointNotFoundError, save_embedding_pickle  # noqa: E402
from cosmos_predict2.text.prompt_files import (  # noqa: E402
    EmbeddingJob,
    EmbeddingRunReport,
    PromptFileError,
    print_report,
    read_prompt,
)
from scripts.get_t5_embeddings import add_t5_arguments, build_encoder  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def list_media(dataset_path: Path, is_image: bool) -> list[Path]:
    folder = dataset_path / ("images" if is_image else "videos")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; put the {'images' if is_image else 'mp4 videos'} there")
    suffixes = IMAGE_SUFFIXES if is_image else (".mp4",)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_path", required=True, type=Path)
    parser.add_argument("--prompt", default="A video of sks teal robot.", help="prompt used for every file")
    parser.add_argument("--is_image", action="store_true", help="the folder holds images/ instead of videos/")
    add_t5_arguments(parser)
    args = parser.parse_args(argv)
    if not any(ch.isprintable() and not ch.isspace() for ch in args.prompt):
        print(f"error: --prompt {args.prompt!r} is empty (or whitespace only): every metas/*.txt would be an empty "
              "prompt file, which validation and training reject; give the caption every video is trained with, "
              'e.g. --prompt "A video of sks teal robot."', file=sys.stderr)  # fmt: skip
        return 2

    media = list_media(args.dataset_path, args.is_image)
    if not media:
        print(f"no input files found under {args.dataset_path}")
        return 1
    metas_dir = args.dataset_path / "metas"
    metas_dir.mkdir(parents=True, exist_ok=True)
    report = EmbeddingRunReport()
    pending = []
    for path in media:
        meta = metas_dir / f"{path.stem}.txt"
        if not meta.exists():
            meta.write_text(args.prompt + "\n", encoding="utf-8")
        else:
            try:
                read_prompt(meta)  # an existing prompt file is kept: it must be usable
            except PromptFileError as e:
                report.failed.append(str(e))
                continue
        job = EmbeddingJob(args.prompt, args.dataset_path / "t5_xxl" / f"{path.stem}.pickle")
        if report.check_existing(job):  # missing, or existing but not loadable (re-embedded)
            pending.append(job)
    if pending:
        try:
            encoder = build_encoder(args)
        except T5CheckpointNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        # One prompt for all files: encode it once and write the same array everywhere.
        emb_N_D = encoder.encode_trimmed([args.prompt])[0]
        for job in pending:
            save_embedding_pickle(job.output_path, emb_N_D)
            report.record_written(job)
    return print_report(report)


if __name__ == "__main__":
    sys.exit(main())
