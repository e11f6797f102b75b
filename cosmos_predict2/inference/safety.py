"""Guardrail and prompt refiner around generation (docs/reference.md §9 flags), in the reference pipeline's order:
text guardrail on the prompt -> prompt refiner -> text guardrail on the refined prompt -> generation -> video
guardrail (content filter, then face blur) on the output. A refused prompt or video gives a message and no file, and
a batch goes on with its next job.

The models are `guardrail.Guardrail` (NVIDIA's cosmos-guardrail package) and `prompt_refiner.PromptRefiner`
(Cosmos-Reason1-7B); this module only decides when they run. Every prompt is screened (and refined) before the DiT is
loaded, and the refiner is freed before it, as T5 is. With --num_gpus > 1, rank 0 runs them and sends the results to
the other ranks, so every rank generates from the same prompt."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cosmos_predict2.inference import guardrail as guardrail_module
from cosmos_predict2.inference import prompt_refiner as refiner_module


class SafetyModelUnavailableError(RuntimeError):
    """The guardrail or prompt refiner is enabled but cannot run here."""


def check_safety_models(disable_guardrail: bool, disable_prompt_refiner: bool, prompt_embedding: bool = False) -> None:
    """Called before any model is loaded, so a forgotten flag or download costs seconds, not a 14B model load."""
    if prompt_embedding and not disable_guardrail:
        raise SafetyModelUnavailableError(
            "the guardrail checks the prompt text, which --prompt_embedding does not carry: pass --prompt instead, "
            "or --disable_guardrail"
        )
    if prompt_embedding and not disable_prompt_refiner:
        raise SafetyModelUnavailableError(
            "the prompt refiner rewrites the prompt text, which --prompt_embedding does not carry: pass --prompt "
            "instead, or --disable_prompt_refiner"
        )
    reasons = [] if disable_guardrail else [guardrail_module.unavailable_reason()]
    reasons += [] if disable_prompt_refiner else [refiner_module.unavailable_reason()]
    reasons = [r for r in reasons if r]
    if reasons:
        raise SafetyModelUnavailableError(" Also: ".join(reasons))


def refined_prompt_path(video_path: str | Path) -> Path:
    """Where the refined prompt is saved beside its video: <stem>.refined_prompt.txt."""
    return Path(video_path).with_suffix(".refined_prompt.txt")


def _from_rank0(value: Any) -> Any:
    """rank 0's value on every rank (the identity outside torchrun)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


@dataclasses.dataclass
class SafetyModels:
    """The enabled guardrail and prompt refiner (either may be None); their models load on first use."""

    guardrail: guardrail_module.Guardrail | None
    refiner: refiner_module.PromptRefiner | None
    log: Callable[[str], None] = print

    @classmethod
    def from_flags(cls, disable_guardrail: bool, offload_guardrail: bool, disable_prompt_refiner: bool,
                   offload_prompt_refiner: bool, device: torch.device, log=print) -> SafetyModels:  # fmt: skip
        guard = None if disable_guardrail else guardrail_module.Guardrail(device, offload_guardrail, log=log)
        refiner = None if disable_prompt_refiner else refiner_module.PromptRefiner(device, offload_prompt_refiner,
                                                                                  log=log)  # fmt: skip
        return cls(guard, refiner, log)

    def _check_text(self, prompt: str, what: str, output: str) -> bool:
        ok, reason = self.guardrail.check_text(prompt)
        if not ok:
            self.log(f"guardrail: the {what} for {output} was blocked ({reason}); no video written for it")
        return ok

    def _screen_one(self, prompt: str, output: str, frames: Callable[[], torch.Tensor]) -> tuple[bool, str | None]:
        """(passed, refined prompt or None)."""
        if self.guardrail is not None and not self._check_text(prompt, "prompt", output):
            return False, None
        if self.refiner is None:
            return True, None
        refined = self.refiner.refine(prompt, frames())
        self.log(f"prompt refiner: {output}: {refined}")
        if self.guardrail is not None and not self._check_text(refined, "refined prompt", output):
            return False, None
        return True, refined

    def screen(self, jobs: list, frames_for: Callable[[Any], torch.Tensor], is_main: bool = True) -> list:
        """The jobs whose prompts pass, each with its refined prompt as `prompt` (the original kept in
        `original_prompt`). frames_for(job) -> uint8 conditioning frames [3, n, H, W] for the refiner."""
        if self.guardrail is None and self.refiner is None:
            return jobs
        verdicts = None
        if is_main:
            verdicts = [self._screen_one(job.prompt, job.output_path, lambda job=job: frames_for(job)) for job in jobs]
            if self.refiner is not None:
                self.refiner.close()  # not needed again: free it before the DiT is loaded
        verdicts = _from_rank0(verdicts)
        kept = []
        for job, (ok, refined) in zip(jobs, verdicts):
            if ok:
                kept.append(job if refined is None else dataclasses.replace(job, prompt=refined,
                                                                            original_prompt=job.prompt))
        return kept

    def finish_video(self, video_3_T_H_W: torch.Tensor, output: str) -> torch.Tensor | None:
        """The video to save (faces blurred), or None when the guardrail refuses it. Rank 0 only."""
        if self.guardrail is None:
            return video_3_T_H_W
        result = self.guardrail.check_and_blur_video(video_3_T_H_W)
        if isinstance(result, guardrail_module.Refusal):
            self.log(f"guardrail: the generated video for {output} was blocked ({result.reason}); not saved")
            return None
        return result
