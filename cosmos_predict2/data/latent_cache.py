"""Cached VAE latents: encode each clip once (several windows per long clip), serve them without a VAE.

Layout: `DIR/latents/<H>x<W>_<T>f/manifest.json` plus one `<stem>.safetensors` per video holding
`latents` float32 [K, 16, t, h, w] (K windows) and `starts` int64 [K]. The manifest records the resolution,
frame count, resize mode and VAE identity, and each video's size and mtime, so a stale cache is detected.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from cosmos_predict2.data.common import RetryingDataset, text_fields
from cosmos_predict2.data.validation import SampleFiles, validate_dataset
from cosmos_predict2.data.video import load_clip

MANIFEST_VERSION = 1


class StaleLatentCacheError(RuntimeError):
    """The latent cache does not match the requested resolution, frame count, VAE or source videos."""


def cache_dir(dataset_dir: str | os.PathLike, num_frames: int, video_size: tuple[int, int]) -> Path:
    return Path(dataset_dir) / "latents" / f"{video_size[0]}x{video_size[1]}_{num_frames}f"


def window_starts(total_frames: int, num_frames: int, windows_per_clip: int) -> list[int]:
    """Up to `windows_per_clip` window starts spread evenly over the clip (first and last window included)."""
    last = total_frames - num_frames
    if last < 0:
        raise ValueError(f"clip of {total_frames} frames is shorter than num_frames={num_frames}")
    k = max(1, min(windows_per_clip, last + 1))
    return [0] if k == 1 else sorted({round(i * last / (k - 1)) for i in range(k)})


def _file_stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass
class CacheReport:
    written: int = 0
    reused: int = 0
    problems: list[str] | None = None


def _encode_sample(tokenizer, sample: SampleFiles, starts: list[int], num_frames: int, size, resize_mode: str):
    latents = []
    for start in starts:
        video_3_T_H_W, _ = load_clip(sample.video, start, num_frames, size, resize_mode)
        latents.append(tokenizer.encode(video_3_T_H_W[None])[0].cpu())  # [16, t, h, w]
    return torch.stack(latents)  # [K, 16, t, h, w]


def build_latent_cache(
    dataset_dir: str | os.PathLike,
    tokenizer,
    num_frames: int,
    video_size: tuple[int, int],
    windows_per_clip: int = 4,
    resize_mode: str = "cover",
    overwrite: bool = False,
) -> CacheReport:
    """Encode every valid clip of the dataset with `tokenizer` (a WanVAETokenizer) into the cache folder.

    Invalid files are reported, not cached. Entries whose video, VAE and settings are unchanged are reused.
    """
    out_dir = cache_dir(dataset_dir, num_frames, video_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "version": MANIFEST_VERSION,
        "num_frames": num_frames,
        "video_size": list(video_size),
        "resize_mode": resize_mode,
        "windows_per_clip": windows_per_clip,
        "vae_identity": tokenizer.identity,
    }
    old = _read_manifest(out_dir / "manifest.json") if (out_dir / "manifest.json").exists() else None
    reusable = old["entries"] if old and not overwrite and _same_settings(old, settings) else {}
    report = validate_dataset(dataset_dir, num_frames)
    entries, result = {}, CacheReport(problems=[str(p) for p in report.problems])
    for sample in tqdm(report.valid, desc="caching latents", unit="clip"):
        stamp = _file_stamp(sample.video)
        prev = reusable.get(sample.stem)
        if prev and prev["video_stamp"] == stamp and (out_dir / prev["file"]).exists():
            entries[sample.stem] = prev
            result.reused += 1
            continue
        starts = window_starts(sample.num_frames, num_frames, windows_per_clip)
        latents = _encode_sample(tokenizer, sample, starts, num_frames, video_size, resize_mode)
        file = f"{sample.stem}.safetensors"
        save_file({"latents": latents.contiguous(), "starts": torch.tensor(starts)}, str(out_dir / file))
        entries[sample.stem] = {"file": file, "fps": sample.fps, "starts": starts, "video_stamp": stamp}
        result.written += 1
    manifest = {**settings, "entries": entries}
    tmp = out_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out_dir / "manifest.json")
    return result


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise StaleLatentCacheError(
            f"{path}: unreadable latent-cache manifest ({e}); rerun scripts.cache_latents"
        ) from e


def _same_settings(manifest: dict[str, Any], settings: dict[str, Any]) -> bool:
    return all(manifest.get(k) == v for k, v in settings.items())


class CachedLatentDataset(RetryingDataset):
    """Serves cached latents: `latents` float32 [16, t, h, w] (normalised) plus the text keys of `Dataset`.

    One item per clip; each access picks one of the clip's cached windows at random (as `Dataset` picks a
    random start). Raises StaleLatentCacheError when the cache was built for another resolution, frame count or
    VAE (`vae_identity`, e.g. WanVAETokenizer.identity), or when a source video changed since caching.
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        num_frames: int,
        video_size: tuple[int, int],
        vae_identity: str | None = None,
        check_videos: bool = True,
    ) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.dir = cache_dir(dataset_dir, num_frames, video_size)
        manifest_path = self.dir / "manifest.json"
        if not manifest_path.is_file():
            found = sorted(p.parent.name for p in (self.dataset_dir / "latents").glob("*/manifest.json"))
            raise StaleLatentCacheError(
                f"no latent cache for {video_size[0]}x{video_size[1]} and {num_frames} frames at {manifest_path} "
                f"(caches present: {found or 'none'}); run `python -m scripts.cache_latents --dataset_path "
                f"{self.dataset_dir} --num_frames {num_frames} --height {video_size[0]} --width {video_size[1]}`"
            )
        self.manifest = _read_manifest(manifest_path)
        self._check_manifest(manifest_path, num_frames, video_size, vae_identity)
        self.stems = sorted(self.manifest["entries"])
        if not self.stems:
            raise StaleLatentCacheError(f"{manifest_path}: the latent cache is empty")
        if check_videos:
            self._check_videos(manifest_path)
        self.num_frames, self.video_size = num_frames, tuple(video_size)

    def _check_manifest(self, path: Path, num_frames: int, video_size, vae_identity: str | None) -> None:
        m = self.manifest
        wrong = []
        if m.get("version") != MANIFEST_VERSION:
            wrong.append(f"format version {m.get('version')} != {MANIFEST_VERSION}")
        if m.get("num_frames") != num_frames:
            wrong.append(f"num_frames {m.get('num_frames')} != {num_frames}")
        if m.get("video_size") != list(video_size):
            wrong.append(f"video_size {m.get('video_size')} != {list(video_size)}")
        if vae_identity is not None and m.get("vae_identity") != vae_identity:
            wrong.append(f"VAE {m.get('vae_identity')} != current VAE {vae_identity}")
        if wrong:
            raise StaleLatentCacheError(
                f"{path}: stale latent cache ({'; '.join(wrong)}); rebuild it with "
                f"`python -m scripts.cache_latents --dataset_path {self.dataset_dir} --overwrite ...`"
            )

    def _check_videos(self, path: Path) -> None:
        changed = []
        for stem in self.stems:
            video = self.dataset_dir / "videos" / f"{stem}.mp4"
            if not video.exists() or _file_stamp(video) != self.manifest["entries"][stem]["video_stamp"]:
                changed.append(video.name)
        if changed:
            raise StaleLatentCacheError(
                f"{path}: videos changed or removed since caching: {changed[:8]}; rerun scripts.cache_latents"
            )

    def __len__(self) -> int:
        return len(self.stems)

    def _describe(self, index: int) -> str:
        return str(self.dir / self.manifest["entries"][self.stems[index]]["file"])

    def _load(self, index: int) -> dict[str, Any]:
        stem = self.stems[index]
        entry = self.manifest["entries"][stem]
        k = random.randrange(len(entry["starts"]))
        try:
            # Read only the chosen window's slice from the file, not all K windows.
            with safe_open(str(self.dir / entry["file"]), framework="pt") as f:
                latents_C_t_h_w = f.get_slice("latents")[k].float()
        except Exception as e:  # safetensors raises its own error types for truncated files
            raise OSError(f"{self._describe(index)}: cannot read cached latents ({e})") from e
        h, w = self.video_size
        return {
            "latents": latents_C_t_h_w,
            **text_fields(self.dataset_dir / "t5_xxl" / f"{stem}.pickle"),
            "fps": float(entry["fps"]),
            "image_size": torch.tensor([h, w, h, w], dtype=torch.int64),
            "num_frames": self.num_frames,
            "padding_mask": torch.zeros(1, h, w, dtype=torch.float32),
            "video_name": stem,
        }
