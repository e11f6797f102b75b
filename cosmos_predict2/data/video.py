"""Video decoding with PyAV: probe, seek to a window, decode only the needed frames, resize with antialiasing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_MODES = ("cover", "stretch")


class VideoReadError(RuntimeError):
    """A video cannot be opened, decoded, or is too short. The message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    width: int
    height: int


def _open(path: Path):
    import av

    if not path.is_file():
        raise VideoReadError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: video file is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except Exception as e:  # PyAV raises InvalidDataError and friends for broken containers
        raise VideoReadError(f"{path}: cannot open video ({type(e).__name__}: {e})") from e
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: file has no video stream")
    return container


def _frame_rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise VideoReadError("cannot determine the frame rate")
    return Fraction(rate)


def _count_frames(container, stream) -> int:
    """Exact frame count: the header's when present, else count packets (demux only, no decoding)."""
    if stream.frames > 0:
        return int(stream.frames)
    count = sum(1 for packet in container.demux(stream) if packet.size > 0)
    container.seek(0)
    return count


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps and size from the container (cheap: no decoding unless the header lacks a count)."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        try:
            rate = _frame_rate(stream)
            num_frames = _count_frames(container, stream)
        except VideoReadError as e:
            raise VideoReadError(f"{path}: {e}") from e
        except Exception as e:
            raise VideoReadError(f"{path}: cannot read video stream ({type(e).__name__}: {e})") from e
        return VideoInfo(num_frames, float(rate), stream.codec_context.width, stream.codec_context.height)
    finally:
        container.close()


def _frame_index(frame, stream, rate: Fraction) -> int:
    start = stream.start_time or 0
    return round((frame.pts - start) * stream.time_base * rate)


def _decode_window(
    container, stream, start: int, num_frames: int, seek: bool, stats: dict, keep: bool = True
) -> list[np.ndarray | None]:
    """Frames [start, start + num_frames) as rgb24 arrays (None placeholders when keep=False: decode-only check).
    stats["last_index"] is the highest frame index the decoder produced (-1: none)."""
    rate = _frame_rate(stream)
    if seek and start > 0:
        # Seek to the keyframe at or before the window start; then decode forward, dropping earlier frames.
        target_pts = int((stream.start_time or 0) + Fraction(start) / rate / stream.time_base)
        container.seek(target_pts, stream=stream, backward=True, any_frame=False)
    frames: list[np.ndarray | None] = []
    stats["last_index"] = -1
    for frame in container.decode(stream):
        stats["decoded_frames"] = stats.get("decoded_frames", 0) + 1
        if frame.pts is None:
            continue
        idx = _frame_index(frame, stream, rate)
        stats["last_index"] = max(stats["last_index"], idx)
        if idx < start:
            continue
        if not frames and idx > start:
            raise _SeekOvershootError()
        # threads=1: PyAV >= 17 converts with a swscale thread pool kept per thread; a DataLoader worker forked after
        # this process converted one frame inherits that pool without its threads and waits on it forever.
        frames.append(frame.to_ndarray(format="rgb24", threads=1) if keep else None)
        if len(frames) == num_frames:
            break
    return frames


class _SeekOvershootError(Exception):
    """The demuxer landed after the requested frame; retry by decoding from the beginning."""


def _read_window(path: Path, start: int, num_frames: int, stats: dict, keep: bool) -> tuple[list, float]:
    if start < 0 or num_frames <= 0:
        raise ValueError(f"{path}: invalid window start={start} num_frames={num_frames}")
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-threaded decoding of the window
        fps = float(_frame_rate(stream))
        claimed = int(stream.frames)  # the container's frame count (0: not recorded)
        try:
            frames = _decode_window(container, stream, start, num_frames, True, stats, keep)
        except _SeekOvershootError:
            container.seek(0)
            frames = _decode_window(container, stream, start, num_frames, False, stats, keep)
    except VideoReadError as e:
        raise VideoReadError(f"{path}: {e}") from e
    except Exception as e:
        raise VideoReadError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from e
    finally:
        container.close()
    if len(frames) < num_frames:
        end, last = start + num_frames - 1, stats["last_index"]
        ended = f"ended after {last + 1} frames" if last >= 0 else f"produced no frame from frame {start} on"
        if claimed > last + 1:  # the header promises frames that are not there
            raise VideoReadError(
                f"{path}: the container claims {claimed} frames but decoding {ended} (needed frames {start}..{end}): "
                "the file is corrupt or truncated; re-encode or re-copy it, or remove it"
            )
        raise VideoReadError(
            f"{path}: needed frames {start}..{end} but the video {ended}; use a longer clip or a smaller num_frames"
        )
    return frames, fps


def read_video_window(
    path: str | os.PathLike, start: int, num_frames: int, stats: dict | None = None
) -> tuple[np.ndarray, float]:
    """Decode frames [start, start + num_frames) as uint8 frames_T_H_W_3 plus the video's fps.

    Seeks to the nearest keyframe before `start` so only the window (and at most one GOP before it) is decoded.
    `stats`, when given, receives "decoded_frames" (how many frames the decoder produced).
    A file whose container claims more frames than can be decoded is reported as corrupt or truncated.
    """
    stats = {} if stats is None else stats
    frames, fps = _read_window(Path(path), start, num_frames, stats, keep=True)
    return np.stack(frames), fps


def check_video_decodes(path: str | os.PathLike, start: int, num_frames: int, stats: dict | None = None) -> None:
    """Decode frames [start, start + num_frames) without keeping them (validation: memory stays flat even for
    every frame of a long video); raises VideoReadError like read_video_window."""
    _read_window(Path(path), start, num_frames, {} if stats is None else stats, keep=False)


def _cover_box(src_h: int, src_w: int, dst_h: int, dst_w: int) -> tuple[int, int]:
    """Smallest (h, w) with the source aspect ratio that covers (dst_h, dst_w)."""
    scale = max(dst_h / src_h, dst_w / src_w)
    return max(dst_h, round(src_h * scale)), max(dst_w, round(src_w * scale))


def resize_video(video_T_3_H_W: torch.Tensor, size_hw: tuple[int, int], mode: str = "cover") -> torch.Tensor:
    """Resize uint8 frames to size_hw = (H, W) with antialiasing.

    mode "cover": scale to cover the target keeping the aspect ratio, then centre-crop (no distortion).
    mode "stretch": the reference's plain resize to (H, W) (distorts when aspect ratios differ).
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    dst_h, dst_w = size_hw
    src_h, src_w = video_T_3_H_W.shape[-2:]
    new_h, new_w = (dst_h, dst_w) if mode == "stretch" else _cover_box(src_h, src_w, dst_h, dst_w)
    out = video_T_3_H_W
    if (new_h, new_w) != (src_h, src_w):
        # Antialiased bilinear matches PIL-style downscaling; interpolate needs float input.
        out = F.interpolate(out.float(), size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    top, left = (new_h - dst_h) // 2, (new_w - dst_w) // 2
    return out[..., top : top + dst_h, left : left + dst_w].contiguous()


def load_clip(
    path: str | os.PathLike, start: int, num_frames: int, size_hw: tuple[int, int], resize_mode: str = "cover"
) -> tuple[torch.Tensor, float]:
    """Decode a window and resize it: returns (video_3_T_H_W uint8, fps)."""
    frames_T_H_W_3, fps = read_video_window(path, start, num_frames)
    video_T_3_H_W = torch.from_numpy(frames_T_H_W_3).permute(0, 3, 1, 2)
    video_T_3_H_W = resize_video(video_T_3_H_W, size_hw, resize_mode)
    return video_T_3_H_W.permute(1, 0, 2, 3).contiguous(), fps


def write_video(path: str | os.PathLike, frames_T_H_W_3: np.ndarray, fps: float = 16, codec: str = "libx264") -> None:
    """Write uint8 RGB frames to an mp4 (used by tests, the benchmark and the demo to make synthetic clips)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames_T_H_W_3.shape[2], frames_T_H_W_3.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "g": "16"}  # keyframe every 16 frames so seeking is exercised
        for rgb in frames_T_H_W_3:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
