"""Encode a dataset's clips once with the VAE and store normalised latents under `DIR/latents/`.

    python -m scripts.cache_latents --dataset_path datasets/my_set --num_frames 93 --height 704 --width 1280 \
        --tokenizer_path checkpoints/nvidia/Cosmos-Predict2-2B-Video2World/tokenizer/tokenizer.pth

Training then uses `Dataset(..., use_cached_latents=True)` (or CachedLatentDataset) and needs no VAE on the GPU.
The manifest records the tokenizer file's sha256 and the resize mode: training with other weights
(model.config.tokenizer_path) or another resize_mode stops with the command to rebuild (--overwrite).
`--tiny_vae` uses a random tiny VAE (tests and the demo only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.data.latent_cache import build_latent_cache, cache_dir  # noqa: E402
from cosmos_predict2.tokenizers import DEFAULT_TOKENIZER_PATH, WanVAETokenizer, tiny_vae_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_path", required=True, type=Path)
    parser.add_argument("--num_frames", type=int, default=93, help="pixel frames per window (4k+1)")
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--windows_per_clip", type=int, default=4, help="windows spread evenly over long clips")
    parser.add_argument("--resize_mode", choices=["cover", "stretch"], default="cover")
    parser.add_argument("--tokenizer_path", default=DEFAULT_TOKENIZER_PATH, help="tokenizer.pth or diffusers folder")
    parser.add_argument("--tiny_vae", action="store_true", help="random tiny VAE (tests/demo only)")
    parser.add_argument("--tiled", action="store_true", help="tiled VAE encode (less GPU memory)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--overwrite", action="store_true", help="re-encode everything")
    args = parser.parse_args(argv)

    if args.tiny_vae:
        tokenizer = WanVAETokenizer.from_config(tiny_vae_config(), device=args.device, tiled=args.tiled)
    else:
        try:
            tokenizer = WanVAETokenizer.from_pretrained(args.tokenizer_path, device=args.device, tiled=args.tiled)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    size = (args.height, args.width)
    report = build_latent_cache(
        args.dataset_path, tokenizer, args.num_frames, size, args.windows_per_clip, args.resize_mode, args.overwrite,
        tokenizer_path=None if args.tiny_vae else args.tokenizer_path,  # a random VAE has no file to fingerprint
    )  # fmt: skip
    print(
        f"latent cache {cache_dir(args.dataset_path, args.num_frames, size)}: {report.written} clip(s) encoded, "
        f"{report.reused} reused, VAE {tokenizer.identity}, {len(report.problems)} file problem(s)"
    )
    for problem in report.problems:
        print(f"  - {problem}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
