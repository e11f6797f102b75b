"""Cached VAE latents: encode each clip once (several windows per long clip), serve them without a VAE.

Layout: `DIR/latents/<H>x<W>_<T>f/manifest.json` plus one `<stem>.safetensors` per video holding
`latents` float32 [K, 16, t, h, w] (K windows) and `starts` int64 [K]. The manifest records the resolution,
frame count, resize mode, VAE identity, the tokenizer weights' path and sha256, and each video's size and
mtime, so that a training run detects a stale cache without loading the VAE.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from cosmos_predict2.data.common import RetryingDataset, sample_dict
from cosmos_predict2.data.validation import SampleFiles, validate_dataset
from cosmos_predict2.data.video import load_clip
from cosmos_predict2.io import atomic_write_text, file_sha256

MANIFEST_VERSION = 2  # 2: records tokenizer_path and tokenizer_sha256
READABLE_VERSIONS = (1, 2)  # version-1 caches lack the tokenizer fields: served with a warning


class StaleLatentCacheError(RuntimeError):
    """The latent cache does not match the requested resolution, frame count, VAE or source videos."""


class LatentCacheWarning(UserWarning):
    """One staleness check cannot be made (an old cache lacks the field, or the tokenizer file is absent)."""


def tokenizer_sha256(path: str | os.PathLike) -> str:
    """sha256 of the VAE weights `WanVAETokenizer.from_pretrained(path)` would load, without loading them.

    A file (tokenizer.pth) hashes its bytes; a diffusers folder (or its `vae/` subfolder) hashes every file's
    relative name and sha256. Results are memoised per process, so a run reads the ~500 MB file once.
    """
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer weights not found at {path}")
    root = path / "vae" if (path / "vae" / "config.json").is_file() else path
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.relative_to(root).as_posix().startswith("."))
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(root).as_posix()} {file_sha256(file)}\n".encode())
    return digest.hexdigest()


def rebuild_command(
    dataset_dir: str | os.PathLike,
    num_frames: int,
    video_size: tuple[int, int],
    resize_mode: str | None = None,
    tokenizer_path: str | os.PathLike | None = None,
    overwrite: bool = True,
) -> str:
    """The `scripts.cache_latents` command line that builds this cache (quoted in stale-cache errors)."""
    cmd = (f"python -m scripts.cache_latents --dataset_path {dataset_dir} --num_frames {num_frames} "
           f"--height {video_size[0]} --width {video_size[1]}")  # fmt: skip
    if resize_mode is not None:
        cmd += f" --resize_mode {resize_mode}"
    if tokenizer_path is not None:
        cmd += f" --tokenizer_path {tokenizer_path}"
    return cmd + (" --overwrite" if overwrite else "")


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
    tokenizer_path: str | os.PathLike | None = None,
) -> CacheReport:
    """Encode every valid clip of the dataset with `tokenizer` (a WanVAETokenizer) into the cache folder.

    tokenizer_path: the weights the tokenizer was loaded from; its sha256 is recorded so that training with
    other weights is refused (None for an in-memory VAE, e.g. a random tiny one: nothing to compare).
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
        "tokenizer_sha256": tokenizer_sha256(tokenizer_path) if tokenizer_path is not None else None,
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
    # The path is informational (where the weights were): moving them does not make the cache stale.
    recorded_path = None if tokenizer_path is None else str(tokenizer_path)
    manifest = {**settings, "tokenizer_path": recorded_path, "entries": entries}
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1))
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


_warned: set[tuple[str, str]] = set()  # (cache folder, message): warn once per process


def _warn_once(folder: Path, message: str) -> None:
    if (str(folder), message) not in _warned:
        _warned.add((str(folder), message))
        warnings.warn(f"{folder}: {message}", LatentCacheWarning, stacklevel=5)


def _warn_missing_once(folder: Path, field: str, why: str) -> None:
    _warn_once(folder, f"the latent cache predates recording `{field}`, so {why} cannot be checked; rebuild it "
                       "with scripts.cache_latents --overwrite to enable the check")  # fmt: skip


class CachedLatentDataset(RetryingDataset):
    """Serves cached latents: `latents` float32 [16, t, h, w] (normalised) plus the other keys of `Dataset`.

    One item per clip; each access picks one of the clip's cached windows at random (as `Dataset` picks a
    random start). Raises StaleLatentCacheError when the cache was built for another resolution, frame count,
    resize mode (`resize_mode`), VAE (`vae_identity`, e.g. WanVAETokenizer.identity, or `tokenizer_path`, whose
    file sha256 is compared without loading it; see also `check_tokenizer`), or when a source video changed.
    A None argument skips its check.
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        num_frames: int,
        video_size: tuple[int, int],
        vae_identity: str | None = None,
        check_videos: bool = True,
        resize_mode: str | None = None,
        tokenizer_path: str | os.PathLike | None = None,
    ) -> None:
        self.dataset_dir = Path(dataset_dir)
        self.num_frames, self.video_size = int(num_frames), (int(video_size[0]), int(video_size[1]))
        self.resize_mode = resize_mode
        self.dir = cache_dir(dataset_dir, num_frames, video_size)
        self.manifest_path = self.dir / "manifest.json"
        if not self.manifest_path.is_file():
            found = sorted(p.parent.name for p in (self.dataset_dir / "latents").glob("*/manifest.json"))
            raise StaleLatentCacheError(
                f"no latent cache for {video_size[0]}x{video_size[1]} and {num_frames} frames at "
                f"{self.manifest_path} (caches present: {found or 'none'}); run "
                f"`{rebuild_command(self.dataset_dir, num_frames, video_size, resize_mode, tokenizer_path, False)}`"
            )
        self.manifest = _read_manifest(self.manifest_path)
        wrong = self._settings_problems(vae_identity)
        if tokenizer_path is not None:
            wrong += self._tokenizer_problems(tokenizer_path)
        self._raise_if_stale(wrong, tokenizer_path)
        self.stems = sorted(self.manifest["entries"])
        if not self.stems:
            raise StaleLatentCacheError(f"{self.manifest_path}: the latent cache is empty")
        if check_videos:
            self._check_videos(self.manifest_path)

    def _settings_problems(self, vae_identity: str | None) -> list[str]:
        m, wrong = self.manifest, []
        if m.get("version") not in READABLE_VERSIONS:
            wrong.append(f"format version {m.get('version')} != {MANIFEST_VERSION}")
        if m.get("num_frames") != self.num_frames:
            wrong.append(f"num_frames {m.get('num_frames')} != {self.num_frames}")
        if m.get("video_size") != list(self.video_size):
            wrong.append(f"video_size {m.get('video_size')} != {list(self.video_size)}")
        if vae_identity is not None and m.get("vae_identity") != vae_identity:
            wrong.append(f"VAE {m.get('vae_identity')} != current VAE {vae_identity}")
        if self.resize_mode is not None and "resize_mode" not in m:
            _warn_missing_once(self.dir, "resize_mode", "the resize mode")
        elif self.resize_mode is not None and m["resize_mode"] != self.resize_mode:
            wrong.append(f"resize_mode: recorded {m['resize_mode']!r}, current {self.resize_mode!r}")
        return wrong

    def _tokenizer_problems(self, tokenizer_path: str | os.PathLike) -> list[str]:
        if "tokenizer_sha256" not in self.manifest:
            _warn_missing_once(self.dir, "tokenizer_sha256", "the tokenizer weights")
            return []
        if not Path(tokenizer_path).exists():  # training from latents needs no VAE, so the file may be elsewhere
            _warn_once(self.dir, f"tokenizer weights not found at {tokenizer_path}, so they cannot be compared "
                                 "with the ones this cache was encoded with")  # fmt: skip
            return []
        recorded, current = self.manifest["tokenizer_sha256"], tokenizer_sha256(tokenizer_path)
        if recorded == current:
            return []
        source = self.manifest.get("tokenizer_path") or "an in-memory VAE, not a file"
        return [f"tokenizer sha256: recorded {recorded} ({source}), current {current} ({tokenizer_path})"]

    def _raise_if_stale(self, wrong: list[str], tokenizer_path: str | os.PathLike | None) -> None:
        if wrong:
            cmd = rebuild_command(self.dataset_dir, self.num_frames, self.video_size, self.resize_mode, tokenizer_path)
            raise StaleLatentCacheError(
                f"{self.manifest_path}: stale latent cache in {self.dir} ({'; '.join(wrong)}); rebuild it with `{cmd}`"
            )

    def check_tokenizer(self, tokenizer_path: str | os.PathLike) -> None:
        """Raise StaleLatentCacheError unless the cache was encoded with the weights at `tokenizer_path` (compared
        by sha256, without loading the VAE); an old cache without the record warns once instead."""
        self._raise_if_stale(self._tokenizer_problems(tokenizer_path), tokenizer_path)

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
        embedding = self.dataset_dir / "t5_xxl" / f"{stem}.pickle"
        return sample_dict("latents", latents_C_t_h_w, embedding, entry["fps"], self.num_frames, self.video_size, stem)
