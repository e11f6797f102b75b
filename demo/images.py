"""PNG writers for the demo (Pillow only): the contact sheet (rows: ground truth, base, LoRA; columns: frames) and
the training-loss curve."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BG = (255, 255, 255)
INK = (30, 30, 30)


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def contact_sheet(
    path: str | Path,
    groups: Sequence[tuple[str, Sequence[tuple[str, np.ndarray]]]],
    frame_indices: Sequence[int],
    scale: int = 2,
) -> Path:
    """groups: [(title, [(row label, frames uint8 [T, H, W, 3]), ...]), ...]; one column per frame index."""
    first = groups[0][1][0][1]
    h, w = first.shape[1] * scale, first.shape[2] * scale
    label_w, title_h, head_h, gap = 64, 18, 16, 6
    rows_total = sum(len(rows) for _, rows in groups)
    width = label_w + len(frame_indices) * (w + 2)
    height = head_h + len(groups) * (title_h + gap) + rows_total * (h + 2)
    sheet = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(sheet)
    font = _font(11)
    for j, t in enumerate(frame_indices):
        draw.text((label_w + j * (w + 2) + 2, 2), f"frame {t}", fill=INK, font=font)
    y = head_h
    for title, rows in groups:
        y += gap
        draw.text((2, y + 2), title, fill=INK, font=font)
        y += title_h
        for label, frames in rows:
            draw.text((4, y + h // 2 - 6), label, fill=INK, font=font)
            for j, t in enumerate(frame_indices):
                tile = Image.fromarray(frames[t]).resize((w, h), Image.NEAREST)
                sheet.paste(tile, (label_w + j * (w + 2), y))
            y += h + 2
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def loss_curve(path: str | Path, iterations: Sequence[int], losses: Sequence[float], title: str = "",
               size: tuple[int, int] = (640, 360)) -> Path:  # fmt: skip
    """Training loss (grey) and its moving average (blue) against iteration, log-scaled y axis."""
    W, H = size
    left, right, top, bottom = 60, 16, 28, 40
    sheet = Image.new("RGB", (W, H), BG)
    draw = ImageDraw.Draw(sheet)
    font = _font(11)
    pts = [(i, v) for i, v in zip(iterations, losses) if v is not None and math.isfinite(v) and v > 0]
    if not pts:
        raise ValueError("loss_curve: no finite positive losses to plot")
    xs, ys = [p[0] for p in pts], [math.log10(p[1]) for p in pts]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = math.floor(min(ys) * 4) / 4, math.ceil(max(ys) * 4) / 4
    y1 = y1 if y1 > y0 else y0 + 0.25

    def px(x: float, y: float) -> tuple[float, float]:
        u = (x - x0) / (x1 - x0) * (W - left - right)
        return (left + u, H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom))

    draw.rectangle([left, top, W - right, H - bottom], outline=INK)
    steps = max(1, round((y1 - y0) / 0.25))
    for k in range(steps + 1):  # y grid every 0.25 decades
        y = y0 + k * (y1 - y0) / steps
        _, py = px(x0, y)
        draw.line([left, py, W - right, py], fill=(225, 225, 225))
        draw.text((4, py - 6), f"{10 ** y:.3g}", fill=INK, font=font)
    for k in range(6):
        x = x0 + k * (x1 - x0) / 5
        pxx, _ = px(x, y0)
        draw.text((pxx - 10, H - bottom + 4), f"{round(x)}", fill=INK, font=font)
    draw.line([px(x, y) for x, y in zip(xs, ys)], fill=(170, 170, 170), width=1)
    smooth = _moving_average([10**y for y in ys], max(1, len(ys) // 20))
    draw.line([px(x, math.log10(v)) for x, v in zip(xs, smooth)], fill=(30, 90, 200), width=2)
    draw.text((left, 6), title or "training loss", fill=INK, font=font)
    draw.text((W // 2 - 20, H - 18), "iteration", fill=INK, font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
