"""Fixed choices of the reference inference scripts (docs/reference.md §2, §5, §9): resolutions, frame counts, paths and
the default negative prompt."""

from __future__ import annotations

from cosmos_predict2.tokenizers import check_frame_count

# docs/reference.md §5, (W, H) per resolution and aspect ratio.
RESOLUTIONS: dict[str, dict[str, tuple[int, int]]] = {
    "720": {"16:9": (1280, 704), "4:3": (960, 704), "1:1": (960, 960), "3:4": (704, 960), "9:16": (704, 1280)},
    "480": {"16:9": (768, 432), "4:3": (640, 480), "1:1": (480, 480), "3:4": (480, 640), "9:16": (432, 768)},
}
ASPECT_RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16")
FRAMES_PER_FPS = {16: 93, 10: 61}  # released checkpoints: 93 frames at 16 fps, 61 at 10 fps
MODEL_SIZES = ("2B", "14B")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_EXTENSIONS = (".mp4",)
# Height and width must be multiples of the VAE's 8x downsampling times the DiT's 2x2 patches.
SIZE_MULTIPLE = 16

# NVIDIA's default negative prompt for Cosmos-Predict2 Video2World (the reference's and diffusers' default).
DEFAULT_NEGATIVE_PROMPT = (
    "The video captures a series of frames showing ugly scenes, static with no motion, motion blur, "
    "over-saturation, shaky footage, low resolution, grainy texture, pixelated images, poorly lit areas, "
    "underexposed and overexposed scenes, poor color balance, washed out colors, choppy sequences, jerky "
    "movements, low frame rate, artifacting, color banding, unnatural transitions, outdated special effects, "
    "fake elements, unconvincing visuals, poorly edited content, jump cuts, visual noise, and flickering. "
    "Overall, the video is of poor quality."
)


def model_dir(model_size: str) -> str:
    return f"checkpoints/nvidia/Cosmos-Predict2-{model_size}-Video2World"


def default_dit_path(model_size: str, resolution: str, fps: int, natten: bool = False) -> str:
    """The released checkpoint's path; `natten`: its sparse-attention variant (720p only, same keys)."""
    return f"{model_dir(model_size)}/model-{resolution}p-{fps}fps{'-natten' if natten else ''}.pt"


def default_tokenizer_path(model_size: str) -> str:
    return f"{model_dir(model_size)}/tokenizer/tokenizer.pth"


DEFAULT_T5_PATH = "checkpoints/google-t5/t5-11b"


def video_size_hw(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """(H, W) of the generated video for a --resolution / --aspect_ratio pair (docs/reference.md §5 table is W x H)."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"--resolution must be one of {sorted(RESOLUTIONS)}, got {resolution!r}")
    if aspect_ratio not in RESOLUTIONS[resolution]:
        raise ValueError(f"--aspect_ratio must be one of {list(ASPECT_RATIOS)}, got {aspect_ratio!r}")
    w, h = RESOLUTIONS[resolution][aspect_ratio]
    return h, w


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (H, W), each a positive multiple of 16."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise ValueError(f"--size must look like WIDTHxHEIGHT (e.g. 64x32), got {text!r}") from e
    if w <= 0 or h <= 0 or w % SIZE_MULTIPLE or h % SIZE_MULTIPLE:
        raise ValueError(f"--size {text}: width and height must be positive multiples of {SIZE_MULTIPLE}")
    return h, w


def default_num_frames(fps: int) -> int:
    if fps not in FRAMES_PER_FPS:
        raise ValueError(f"--fps must be one of {sorted(FRAMES_PER_FPS)}, got {fps}")
    return FRAMES_PER_FPS[fps]


def check_num_frames(num_frames: int, num_conditional_frames: int) -> None:
    try:
        check_frame_count(num_frames)
    except ValueError as e:
        raise ValueError(f"--num_frames: {e}") from e
    if num_frames <= num_conditional_frames:
        raise ValueError(
            f"--num_frames {num_frames} leaves nothing to generate after {num_conditional_frames} conditioning frames"
        )
