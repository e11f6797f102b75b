"""Deterministic synthetic videos for the demo (issue 6).

Two domains, both drawn with Pillow at 4x resolution and downsampled (anti-aliased edges):

- "shapes" (pretraining of the tiny VAE and the tiny base DiT): one or two coloured shapes (circle, square,
  triangle, diamond) gliding in one of eight directions over a plain or two-tone background; the prompt names
  the colours, shapes and directions, e.g. "a red circle moving left on a dark blue background". No teal.
- "robot" (the LoRA domain): the guide's "sks teal robot": a teal body and head with a yellow eye, walking to the
  right across a lab floor while its arm swings and its legs step. The base model has never seen it.

Every clip is a function of (seed, index) only, so any subset can be regenerated exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SS = 4  # supersampling factor

SHAPE_COLORS = {
    "red": (220, 40, 40), "orange": (245, 140, 20), "yellow": (240, 220, 40), "green": (50, 170, 60),
    "blue": (40, 80, 220), "purple": (140, 60, 190), "pink": (240, 120, 180), "white": (245, 245, 245),
    "black": (20, 20, 20), "brown": (130, 80, 40),
}  # fmt: skip
BACKGROUNDS = {
    "dark blue": (20, 30, 80), "black": (10, 10, 10), "white": (235, 235, 235), "grey": (128, 128, 128),
    "light green": (170, 220, 160), "beige": (225, 210, 175), "dark red": (90, 20, 25), "sky blue": (140, 190, 235),
}  # fmt: skip
SHAPES = ("circle", "square", "triangle", "diamond")
DIRECTIONS = {
    "right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1),
    "up and to the right": (1, -1), "up and to the left": (-1, -1),
    "down and to the right": (1, 1), "down and to the left": (-1, 1),
}  # fmt: skip

TEAL = (0, 165, 160)
TEAL_DARK = (0, 110, 108)


@dataclass
class Clip:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    prompt: str


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


def _contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return float(np.abs(np.subtract(a, b)).sum())


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, color) -> None:
    cx, cy, r = cx * SS, cy * SS, r * SS
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=color)
    else:  # diamond
        draw.polygon([(cx, cy - r * 1.2), (cx + r, cy), (cx, cy + r * 1.2), (cx - r, cy)], fill=color)


def _finish(img: Image.Image, height: int, width: int) -> np.ndarray:
    return np.asarray(img.resize((width, height), Image.BOX), dtype=np.uint8)


def shapes_clip(seed: int, index: int, num_frames: int = 17, height: int = 64, width: int = 64) -> Clip:
    """A pretraining clip: 1-2 shapes moving in straight lines (prompt names colour, shape, direction)."""
    rng = _rng(seed, index)
    bg_name = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    bg = BACKGROUNDS[bg_name]
    two_tone = rng.random() < 0.4
    bg2 = tuple(int(c * 0.75) for c in bg)
    objects, phrases = [], []
    for _ in range(1 if rng.random() < 0.7 else 2):
        colors = [c for c in SHAPE_COLORS if _contrast(SHAPE_COLORS[c], bg) > 200]
        color = colors[rng.integers(len(colors))]
        shape = SHAPES[rng.integers(len(SHAPES))]
        direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
        dx, dy = DIRECTIONS[direction]
        norm = math.hypot(dx, dy)
        r = float(rng.uniform(5, 9))
        speed = float(rng.uniform(1.0, 2.0))  # pixels per frame
        vx, vy = dx / norm * speed, dy / norm * speed
        # Start so that the path stays (mostly) inside the frame.
        lo_x, hi_x = r - vx * (num_frames - 1) * (vx < 0), width - r - vx * (num_frames - 1) * (vx > 0)
        lo_y, hi_y = r - vy * (num_frames - 1) * (vy < 0), height - r - vy * (num_frames - 1) * (vy > 0)
        x0 = float(rng.uniform(min(lo_x, hi_x), max(lo_x, hi_x)))
        y0 = float(rng.uniform(min(lo_y, hi_y), max(lo_y, hi_y)))
        objects.append((shape, SHAPE_COLORS[color], x0, y0, vx, vy, r))
        phrases.append(f"a {color} {shape} moving {direction}")
    prompt = " and ".join(phrases) + f" on a {bg_name} background"
    frames = []
    for t in range(num_frames):
        img = Image.new("RGB", (width * SS, height * SS), bg)
        draw = ImageDraw.Draw(img)
        if two_tone:
            draw.rectangle([0, height * SS * 2 // 3, width * SS, height * SS], fill=bg2)
        for shape, color, x0, y0, vx, vy, r in objects:
            _draw_shape(draw, shape, x0 + vx * t, y0 + vy * t, r, color)
        frames.append(_finish(img, height, width))
    return Clip(np.stack(frames), prompt)


def robot_clip(seed: int, index: int, num_frames: int = 17, height: int = 64, width: int = 64) -> Clip:
    """A LoRA-domain clip: the teal robot walks right (about 1.6 px/frame), its arm swings and its legs step."""
    rng = _rng(seed, index)
    wall = tuple(int(c + rng.integers(-12, 13)) for c in (205, 205, 198))
    floor = tuple(int(c + rng.integers(-12, 13)) for c in (150, 138, 125))
    floor_y = height * 0.78 + rng.uniform(-2, 2)
    speed = rng.uniform(1.4, 1.8)
    x_start = rng.uniform(8, 16)
    phase = rng.uniform(0, 2 * math.pi)
    period = 8.0  # frames per arm swing
    frames = []
    for t in range(num_frames):
        img = Image.new("RGB", (width * SS, height * SS), wall)
        d = ImageDraw.Draw(img)
        s = lambda v: v * SS  # noqa: E731
        d.rectangle([0, s(floor_y), s(width), s(height)], fill=floor)
        d.rectangle([0, s(floor_y) - SS, s(width), s(floor_y)], fill=(90, 85, 80))
        cx = x_start + speed * t
        swing = math.sin(2 * math.pi * t / period + phase)
        # legs (alternate)
        leg_top, leg_len = floor_y - 7, 7
        for side, sign in ((-2.5, 1), (2.5, -1)):
            off = sign * 2.0 * swing
            d.line([s(cx + side), s(leg_top), s(cx + side + off), s(leg_top + leg_len)], fill=TEAL_DARK, width=3 * SS)
        # body
        body_top, body_bottom = floor_y - 21, floor_y - 7
        d.rectangle([s(cx - 6), s(body_top), s(cx + 6), s(body_bottom)], fill=TEAL)
        # head with a yellow eye facing right, and an antenna
        d.rectangle([s(cx - 5), s(body_top - 9), s(cx + 5), s(body_top - 1)], fill=TEAL)
        d.rectangle([s(cx + 1), s(body_top - 7), s(cx + 4), s(body_top - 4)], fill=(250, 230, 40))
        d.line([s(cx), s(body_top - 9), s(cx), s(body_top - 13)], fill=TEAL_DARK, width=SS)
        # arm from the shoulder, swinging +-60 degrees around hanging down
        angle = math.radians(60) * swing
        ax, ay = cx + 1, body_top + 2
        hx, hy = ax + 11 * math.sin(angle), ay + 11 * math.cos(angle)
        d.line([s(ax), s(ay), s(hx), s(hy)], fill=(240, 100, 30), width=3 * SS)
        d.ellipse([s(hx - 2), s(hy - 2), s(hx + 2), s(hy + 2)], fill=(240, 100, 30))
        frames.append(_finish(img, height, width))
    return Clip(np.stack(frames), "a teal robot walking to the right and swinging its orange arm")


CLIP_MAKERS = {"shapes": shapes_clip, "robot": robot_clip}


def make_clips(domain: str, seed: int, count: int, start: int = 0, **kwargs) -> list[Clip]:
    maker = CLIP_MAKERS[domain]
    return [maker(seed, i, **kwargs) for i in range(start, start + count)]


def write_dataset(
    folder: str | Path, domain: str, seed: int, count: int, start: int = 0, num_frames: int = 17,
    height: int = 64, width: int = 64, fps: int = 16, write_metas: bool = True, prefix: str | None = None,
) -> list[Path]:
    """Write `folder/videos/<stem>.mp4` (and `folder/metas/<stem>.txt` with the clip's prompt) in the guide's
    layout; returns the video paths. Clip i is `CLIP_MAKERS[domain](seed, i)`."""
    from cosmos_predict2.data.video import write_video

    folder = Path(folder)
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    if write_metas:
        (folder / "metas").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        clip = CLIP_MAKERS[domain](seed, i, num_frames=num_frames, height=height, width=width)
        stem = f"{prefix or domain}_{i:04d}"
        path = folder / "videos" / f"{stem}.mp4"
        write_video(path, clip.frames, fps=fps)
        if write_metas:
            (folder / "metas" / f"{stem}.txt").write_text(clip.prompt + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def read_frames(path: str | Path) -> np.ndarray:
    """All frames of an mp4 as uint8 [T, H, W, 3]."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
