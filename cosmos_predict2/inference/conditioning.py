"""Conditioning input (docs/reference.md §2): an image gives 1 pixel frame, a video its LAST 1 or 5 frames; frames are
resized to cover the target and centre-cropped, then padded to the generated length before VAE encoding."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cosmos_predict2.data.video import VideoReadError, probe_video, read_video_window, resize_video
from cosmos_predict2.inference.defaults import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS


class InferenceInputError(ValueError):
    """A generation input is missing or unusable; the message names the file or flag and what to do."""


def load_image_frames(path: Path) -> torch.Tensor:
    """uint8 frames_1_3_H_W (RGB) of an image file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb_H_W_3 = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise InferenceInputError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
    return torch.from_numpy(rgb_H_W_3.copy()).permute(2, 0, 1)[None]


def load_last_video_frames(path: Path, num_frames: int) -> torch.Tensor:
    """uint8 frames_T_3_H_W: the last `num_frames` frames of a video (the reference conditions on the end)."""
    try:
        total = probe_video(path).num_frames
        if total < num_frames:
            raise InferenceInputError(
                f"{path}: the video has {total} frame(s) but --num_conditional_frames {num_frames} needs at least "
                f"{num_frames}; use a longer video or --num_conditional_frames 1"
            )
        frames_T_H_W_3, _ = read_video_window(path, total - num_frames, num_frames)
    except VideoReadError as e:
        raise InferenceInputError(str(e)) from e
    return torch.from_numpy(frames_T_H_W_3).permute(0, 3, 1, 2)


def load_conditioning_frames(
    input_path: str | os.PathLike, num_conditional_frames: int, size_hw: tuple[int, int]
) -> tuple[torch.Tensor, bool]:
    """Read the conditioning frames resized to size_hw = (H, W): returns (frames_3_n_H_W uint8, is_image).

    An image always gives one frame (whatever num_conditional_frames is, as in the reference)."""
    if num_conditional_frames not in (1, 5):
        raise InferenceInputError(f"--num_conditional_frames must be 1 or 5, got {num_conditional_frames}")
    path = Path(input_path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
        raise InferenceInputError(
            f"{path}: unsupported input type {suffix or '(no extension)'!r}; --input_path takes an image "
            f"({', '.join(IMAGE_EXTENSIONS)}) or a video ({', '.join(VIDEO_EXTENSIONS)})"
        )
    if not path.is_file():
        raise InferenceInputError(f"{path}: --input_path file not found")
    is_image = suffix in IMAGE_EXTENSIONS
    frames_T_3_H_W = load_image_frames(path) if is_image else load_last_video_frames(path, num_conditional_frames)
    frames_T_3_H_W = resize_video(frames_T_3_H_W, size_hw, mode="cover")
    return frames_T_3_H_W.permute(1, 0, 2, 3).contiguous(), is_image


def build_input_video(frames_3_n_H_W: torch.Tensor, num_frames: int, is_image: bool) -> torch.Tensor:
    """The [1, 3, num_frames, H, W] uint8 tensor the VAE encodes: the conditioning frames, then black frames
    (image input) or repeats of the last frame (video input), as the reference builds it (docs/reference.md §2)."""
    _, n, H, W = frames_3_n_H_W.shape
    if n > num_frames:
        raise InferenceInputError(f"{n} conditioning frames do not fit in {num_frames} generated frames")
    if is_image:
        pad_3_R_H_W = frames_3_n_H_W.new_zeros(3, num_frames - n, H, W)
    else:
        pad_3_R_H_W = frames_3_n_H_W[:, -1:].expand(3, num_frames - n, H, W)
    return torch.cat([frames_3_n_H_W, pad_3_R_H_W], dim=1)[None].contiguous()


def num_conditional_latent_frames(num_pixel_frames: int) -> int:
    """1 pixel frame -> 1 latent frame, 5 -> 2 (the causal VAE's 1 + (n - 1) / 4)."""
    return 1 + (num_pixel_frames - 1) // 4


def video_to_uint8_frames(video_3_T_H_W: torch.Tensor) -> np.ndarray:
    """Decoded pixels in [-1, 1] -> uint8 frames_T_H_W_3 for the mp4 writer."""
    x = ((video_3_T_H_W.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def save_video(path: str | os.PathLike, video_3_T_H_W: torch.Tensor, fps: int) -> Path:
    """Write an H.264 mp4 with exactly T frames of size H x W at `fps`."""
    from cosmos_predict2.data.video import write_video

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, video_to_uint8_frames(video_3_T_H_W), fps=fps)
    return path
