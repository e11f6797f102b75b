"""Guardrail and prompt refiner (docs/reference.md §9 flags). They are separate NVIDIA models (Cosmos-Guardrail1 and
Cosmos-Reason1-7B) that this toolkit does not implement yet; enabling one fails with a message naming the flag that
turns it off, instead of generating without the check the user asked for."""

from __future__ import annotations

from pathlib import Path

GUARDRAIL_DIR = "checkpoints/nvidia/Cosmos-Guardrail1"
PROMPT_REFINER_DIR = "checkpoints/nvidia/Cosmos-Reason1-7B"


class SafetyModelUnavailableError(RuntimeError):
    """The guardrail or prompt refiner is enabled but cannot run here."""


def _check(name: str, folder: str, disable_flag: str) -> None:
    if not Path(folder).is_dir():
        raise SafetyModelUnavailableError(
            f"the {name} is enabled but its weights are not at {folder}. Download them there, or pass "
            f"{disable_flag} to generate without it."
        )
    raise SafetyModelUnavailableError(
        f"the {name} weights are at {folder}, but running the {name} is not implemented in this toolkit yet; "
        f"pass {disable_flag} to generate without it."
    )


def check_safety_models(disable_guardrail: bool, disable_prompt_refiner: bool) -> None:
    """Called before any model is loaded, so a forgotten flag costs seconds, not a 14B model load."""
    if not disable_guardrail:
        _check("guardrail (Cosmos-Guardrail1)", GUARDRAIL_DIR, "--disable_guardrail")
    if not disable_prompt_refiner:
        _check("prompt refiner (Cosmos-Reason1-7B)", PROMPT_REFINER_DIR, "--disable_prompt_refiner")
