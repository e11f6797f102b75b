"""Re-create the stand-in sample inputs that the guide's and our docs' inference commands name (see the README.md in
each folder). They are frames drawn by the demo's synthetic renderer (demo/synthetic.py), not NVIDIA's photos:

    python -m scripts.make_sample_inputs            # writes assets/video2world/input0.jpg,
                                                    # assets/video2world_cosmos_nemo_assets/output_Digit_Lift_movie.jpg,
                                                    # assets/robot_first_frame.jpg and assets/batch.json

Deterministic (fixed seeds, Pillow's JPEG encoder at quality 90): running it again gives the same pictures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from demo import REPO_ROOT  # noqa: E402
from demo.synthetic import robot_clip, shapes_clip  # noqa: E402

WIDTH, HEIGHT = 1280, 704  # 720p 16:9 rounded to multiples of 16 (what the 2B/14B models generate at 720p)
DRAW_HEIGHT = 72  # the renderer draws in pixels of a small canvas; the frame is scaled up from it
JPEG_QUALITY = 90
SEED = 2025

# relative path -> (renderer, clip index, frame)
IMAGES = {
    "assets/video2world/input0.jpg": (shapes_clip, 3, 0),
    "assets/video2world_cosmos_nemo_assets/output_Digit_Lift_movie.jpg": (robot_clip, 0, 0),
    "assets/robot_first_frame.jpg": (robot_clip, 1, 0),
}
BATCH = "assets/batch.json"
BATCH_ENTRIES = [
    {"input_video": "assets/robot_first_frame.jpg", "prompt": "A video of sks teal robot.",
     "output_video": "output/batch/robot_first_frame.mp4"},
    {"input_video": "assets/video2world_cosmos_nemo_assets/output_Digit_Lift_movie.jpg",
     "prompt": "A video of sks teal robot walking to the right.", "output_video": "output/batch/digit_lift.mp4"},
]  # fmt: skip


def render(renderer, index: int, frame: int) -> Image.Image:
    draw_width = round(DRAW_HEIGHT * WIDTH / HEIGHT)
    clip = renderer(SEED, index, num_frames=frame + 1, height=DRAW_HEIGHT, width=draw_width)
    small = Image.fromarray(np.ascontiguousarray(clip.frames[frame]))
    return small.resize((WIDTH, HEIGHT), Image.BICUBIC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root to write under")
    args = parser.parse_args(argv)
    for rel, (renderer, index, frame) in IMAGES.items():
        path = args.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        render(renderer, index, frame).save(path, "JPEG", quality=JPEG_QUALITY, optimize=True)
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    batch = args.root / BATCH
    batch.write_text(json.dumps(BATCH_ENTRIES, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {batch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
