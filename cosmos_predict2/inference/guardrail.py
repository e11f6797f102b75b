"""The guardrail: NVIDIA's `cosmos-guardrail` package (PyPI, the optional extra `pip install -e ".[guardrail]"`), run
as the reference Video2World pipeline runs its own copy (cosmos_predict2/auxiliary/guardrail/common/presets.py there):
the text check (keyword Blocklist, then the package's guard language model) on every prompt, and the video check
(the SigLIP-based video content-safety filter, then RetinaFace face blurring) on every generated video.

This module only wires the package's classes; it does not re-implement them. What it adds:
- weights are looked up locally and never downloaded: the package calls `huggingface_hub.snapshot_download` for
  `checkpoint_id`; while its models are built, that call is pinned to the folder found here
  (`checkpoints/nvidia/Cosmos-Guardrail1`, else the Hugging Face cache) and the hub is switched to offline mode;
- offloading (`offload=True`): the models stay on the CPU except while they run.

Heavy imports (the package, transformers, torchvision) happen only when a model is built."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

GUARDRAIL_REPO = "nvidia/Cosmos-Guardrail1"
GUARDRAIL_DIR = "checkpoints/nvidia/Cosmos-Guardrail1"
# The package's text guard model (its `Qwen3Guard` class); it is not part of Cosmos-Guardrail1.
TEXT_GUARD_REPO = "Qwen/Qwen3Guard-Gen-0.6B"
TEXT_GUARD_DIR = "checkpoints/Qwen/Qwen3Guard-Gen-0.6B"
# Files of Cosmos-Guardrail1 the package reads (blocklist/* and the SigLIP cache are folders).
GUARDRAIL_FILES = ("blocklist", "video_content_safety_filter/safety_filter.pt", "face_blur_filter/Resnet50_Final.pth")
DISABLE_FLAG = "--disable_guardrail"


def _download_command(repo: str, folder: str) -> str:
    return f"huggingface-cli download {repo} --local-dir {folder}"


def _find_weights(repo: str, folder: str | Path) -> Path | None:
    """The local folder if it exists, else the repo's snapshot in the Hugging Face cache (offline), else None."""
    if Path(folder).is_dir():
        return Path(folder)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, an incomplete snapshot, ...: not there
        return None


def unavailable_reason(
    weights_dir: str | Path = GUARDRAIL_DIR, text_guard_dir: str | Path = TEXT_GUARD_DIR
) -> str | None:
    """Why the guardrail cannot run here (one line, naming the fix and the flag that disables it), or None.
    Imports the package (to catch a torchvision that does not match torch) but loads no model."""
    try:
        importlib.import_module("cosmos_guardrail.cosmos_guardrail")
    except Exception as e:  # ImportError, or torchvision's "operator torchvision::nms does not exist"
        return (f"the guardrail is enabled but NVIDIA's cosmos-guardrail package cannot be imported "
                f"({type(e).__name__}: {e}); install it with `pip install -e \".[guardrail]\"` (torchvision must "
                f"match the installed torch), or pass {DISABLE_FLAG} to generate without it.")  # fmt: skip
    folder = _find_weights(GUARDRAIL_REPO, weights_dir)
    if folder is None:
        return (f"the guardrail is enabled but its weights ({GUARDRAIL_REPO}) are neither in {weights_dir} nor in the "
                f"Hugging Face cache; download them with `{_download_command(GUARDRAIL_REPO, str(weights_dir))}`, "
                f"or pass {DISABLE_FLAG} to generate without it.")  # fmt: skip
    missing = [name for name in GUARDRAIL_FILES if not (folder / name).exists()]
    if missing:
        return (f"the guardrail weights in {folder} are incomplete (missing {', '.join(missing)}); download them "
                f"again with `{_download_command(GUARDRAIL_REPO, str(weights_dir))}`, or pass {DISABLE_FLAG}.")
    if _find_weights(TEXT_GUARD_REPO, text_guard_dir) is None:
        return (f"the guardrail is enabled but its text guard model ({TEXT_GUARD_REPO}) is neither in "
                f"{text_guard_dir} nor in the Hugging Face cache; download it with "
                f"`{_download_command(TEXT_GUARD_REPO, str(text_guard_dir))}`, or pass {DISABLE_FLAG}.")
    return None


@dataclass
class Refusal:
    """The guardrail blocked a video: no file is written."""

    reason: str


@contextlib.contextmanager
def _pinned_weights(folder: Path) -> Iterator[None]:
    """While the package builds its models: its `snapshot_download(checkpoint_id, ...)` returns `folder`, and every
    other hub lookup (the SigLIP and text-guard `from_pretrained`) is offline, served from local files only."""
    from huggingface_hub import constants

    package = importlib.import_module("cosmos_guardrail.cosmos_guardrail")
    saved = package.snapshot_download, constants.HF_HUB_OFFLINE
    package.snapshot_download = lambda repo_id, **kwargs: str(folder)
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        package.snapshot_download, constants.HF_HUB_OFFLINE = saved


def _image_features_as_tensor(siglip) -> None:
    """transformers 5 returns a ModelOutput from `SiglipModel.get_image_features` (4.x: a tensor). The package
    divides it by its norm, fails on every frame, catches that per frame and calls the video safe: it would let
    every video through. Give it the tensor it expects (the pooled image embedding)."""
    get_image_features = siglip.get_image_features

    def image_features(*args, **kwargs) -> torch.Tensor:
        out = get_image_features(*args, **kwargs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    siglip.get_image_features = image_features


class Guardrail:
    """`check_text(prompt) -> (ok, reason)` and `check_and_blur_video(video) -> video | Refusal`. The text and the
    video models are built on first use (so the text models can run before the DiT is loaded)."""

    def __init__(
        self,
        device: torch.device | str,
        offload: bool = False,
        weights_dir: str | Path = GUARDRAIL_DIR,
        text_guard_dir: str | Path = TEXT_GUARD_DIR,
        log: Callable[[str], None] = print,
    ) -> None:
        self.device, self.offload, self.log = torch.device(device), offload, log
        self.weights_dir, self.text_guard_dir = weights_dir, text_guard_dir
        self._text_runner = None
        self._video_runner = None

    def _folder(self, repo: str, folder: str | Path) -> Path:
        found = _find_weights(repo, folder)
        if found is None:
            raise FileNotFoundError(f"{repo}: not in {folder} nor in the Hugging Face cache; download it with "
                                    f"`{_download_command(repo, str(folder))}` or pass {DISABLE_FLAG}")
        return found

    def _place(self, runner) -> None:
        """Offload: on the CPU between uses; otherwise on the device for good."""
        for model in runner.models:
            if isinstance(model, torch.nn.Module):
                model.to("cpu" if self.offload else self.device)

    @contextlib.contextmanager
    def _running(self, runner) -> Iterator[None]:
        if self.offload:
            for model in runner.models:
                if isinstance(model, torch.nn.Module):
                    model.to(self.device)
        try:
            yield
        finally:
            if self.offload:
                self._place(runner)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    @property
    def text_runner(self):
        if self._text_runner is None:
            from cosmos_guardrail import cosmos_guardrail as cg

            folder = self._folder(GUARDRAIL_REPO, self.weights_dir)
            guard_folder = self._folder(TEXT_GUARD_REPO, self.text_guard_dir)
            self.log(f"guardrail: loading the text checks (blocklist from {folder}, guard model {guard_folder})")
            with _pinned_weights(folder):
                models = [cg.Blocklist(GUARDRAIL_REPO), cg.Qwen3Guard(model_id=str(guard_folder))]
            self._text_runner = cg.GuardrailRunner(safety_models=models)
            self._place(self._text_runner)
        return self._text_runner

    @property
    def video_runner(self):
        if self._video_runner is None:
            from cosmos_guardrail import cosmos_guardrail as cg

            folder = self._folder(GUARDRAIL_REPO, self.weights_dir)
            self.log(f"guardrail: loading the video checks (content-safety filter and face blur from {folder})")
            with _pinned_weights(folder):
                video_filter = cg.VideoContentSafetyFilter(GUARDRAIL_REPO)
                _image_features_as_tensor(video_filter.encoder.model)
                self._video_runner = cg.GuardrailRunner(
                    safety_models=[video_filter], postprocessors=[cg.RetinaFaceFilter(GUARDRAIL_REPO)]
                )
            self._place(self._video_runner)
        return self._video_runner

    def check_text(self, prompt: str) -> tuple[bool, str]:
        """(True, "") for a prompt that passes; (False, the package's reason) for a blocked one."""
        runner = self.text_runner
        with self._running(runner):
            ok, reason = runner.run_safety_check(prompt)
        return ok, "" if ok else reason

    def check_and_blur_video(self, video_3_T_H_W: torch.Tensor) -> torch.Tensor | Refusal:
        """A decoded video in [-1, 1] -> the same video with faces pixelated (float32, CPU), or a Refusal.
        The frames go through uint8 exactly as `save_video` quantises them, so a passing video without faces is
        saved unchanged."""
        from cosmos_predict2.inference.conditioning import video_to_uint8_frames

        runner = self.video_runner
        frames_T_H_W_3 = video_to_uint8_frames(video_3_T_H_W)
        with self._running(runner):
            ok, reason = runner.run_safety_check(frames_T_H_W_3)
            if not ok:
                return Refusal(reason)
            frames_T_H_W_3 = runner.postprocess(frames_T_H_W_3)
        return torch.from_numpy(frames_T_H_W_3).permute(3, 0, 1, 2).float() / 127.5 - 1.0
