"""Cosmos-Predict2 Video2World generation with a LoRA adapter.

    torchrun --nproc_per_node=1 examples/video2world_lora.py --model_size 2B \
        --dit_path checkpoints/PROJECT/GROUP/NAME/checkpoints/model/iter_000001000.pt --use_lora \
        --input_path assets/input.jpg --prompt "..." --save_path output/lora.mp4 \
        --disable_guardrail --disable_prompt_refiner

The adapter's rank, alpha and targets are read from the checkpoint; --lora_rank/--lora_alpha/--lora_target_modules
are optional and must match it. Reference LoRA checkpoints (base + adapters) need --lora_alpha. --lora_scale sets
the adapter strength (0 = the base model exactly).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosmos_predict2.inference.cli import main as _main  # noqa: E402
from cosmos_predict2.inference.cli import run  # noqa: E402
from cosmos_predict2.parallel import end_process  # noqa: E402


def main(argv: list[str] | None = None) -> list[Path]:
    return _main(argv, lora=True)


if __name__ == "__main__":
    end_process(run(lora=True))
