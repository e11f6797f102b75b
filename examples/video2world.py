"""Cosmos-Predict2 Video2World generation (base model).

    python examples/video2world.py --model_size 2B --input_path assets/input.jpg --prompt "..." \
        --save_path output/generated_video.mp4 --disable_guardrail --disable_prompt_refiner

All flags: --help. The pipeline lives in cosmos_predict2/inference/.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python examples/video2world.py): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.inference.cli import main as _main  # noqa: E402
from cosmos_predict2.inference.cli import run  # noqa: E402
from cosmos_predict2.parallel import end_process  # noqa: E402


def main(argv: list[str] | None = None) -> list[Path]:
    return _main(argv, lora=False)


if __name__ == "__main__":
    end_process(run(lora=False))
