"""Cached latents: build with a tiny VAE, serve without a VAE, detect stale caches."""

import pytest
import torch
from data_helpers import make_dataset
from torch.utils.data import DataLoader

from cosmos_predict2.data import (
    CachedLatentDataset,
    Dataset,
    StaleLatentCacheError,
    build_latent_cache,
    cache_dir,
    load_clip,
    window_starts,
)
from cosmos_predict2.tokenizers import WanVAETokenizer, tiny_vae_config


@pytest.fixture(scope="module")
def tok():
    return WanVAETokenizer.from_config(tiny_vae_config(), device="cpu")


@pytest.fixture()
def cached(tmp_path, tok):
    root = make_dataset(tmp_path, {"a": 33, "b": 17})
    report = build_latent_cache(root, tok, num_frames=17, video_size=(32, 48), windows_per_clip=3)
    assert report.written == 2 and not report.problems
    return root


def test_window_starts():
    assert window_starts(33, 17, 3) == [0, 8, 16]
    assert window_starts(17, 17, 4) == [0]
    assert window_starts(20, 17, 10) == [0, 1, 2, 3]


def test_cached_samples_match_vae_and_dataset_keys(cached, tok):
    ds = CachedLatentDataset(cached, 17, (32, 48), vae_identity=tok.identity)
    assert len(ds) == 2
    s = ds[1]  # "b": one window at start 0
    assert s["latents"].shape == (16, 5, 4, 6) and s["latents"].dtype == torch.float32
    video_3_T_H_W, _ = load_clip(cached / "videos" / "b.mp4", 0, 17, (32, 48))
    torch.testing.assert_close(s["latents"], tok.encode(video_3_T_H_W[None])[0])
    video_keys = set(Dataset(cached, 17, (32, 48))[0]) - {"video"}
    assert set(s) - {"latents"} == video_keys
    via_flag = Dataset(cached, 17, (32, 48), use_cached_latents=True)
    batch = next(iter(DataLoader(via_flag, batch_size=2)))
    assert batch["latents"].shape == (2, 16, 5, 4, 6) and "video" not in batch


def test_rebuild_reuses_unchanged_entries(cached, tok):
    report = build_latent_cache(cached, tok, num_frames=17, video_size=(32, 48), windows_per_clip=3)
    assert report.reused == 2 and report.written == 0


def test_stale_cache_errors(cached, tok):
    with pytest.raises(StaleLatentCacheError, match="no latent cache for 64x48.*32x48_17f"):
        CachedLatentDataset(cached, 17, (64, 48))
    with pytest.raises(StaleLatentCacheError, match="no latent cache"):
        CachedLatentDataset(cached, 9, (32, 48))
    other = WanVAETokenizer.from_config(tiny_vae_config(), seed=1, device="cpu")
    with pytest.raises(StaleLatentCacheError, match="stale.*VAE"):
        CachedLatentDataset(cached, 17, (32, 48), vae_identity=other.identity)
    manifest = cache_dir(cached, 17, (32, 48)) / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"num_frames": 17', '"num_frames": 21'))
    with pytest.raises(StaleLatentCacheError, match="num_frames 21 != 17"):
        CachedLatentDataset(cached, 17, (32, 48))


def test_changed_video_is_detected(cached):
    from data_helpers import frame_pattern

    from cosmos_predict2.data import write_video

    write_video(cached / "videos" / "a.mp4", frame_pattern(40), fps=16)
    with pytest.raises(StaleLatentCacheError, match="a.mp4"):
        CachedLatentDataset(cached, 17, (32, 48))


def test_cache_latents_script(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = make_dataset(tmp_path, {"a": 17})
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "scripts.cache_latents", "--dataset_path", str(root), "--num_frames", "17",
           "--height", "32", "--width", "48", "--tiny_vae", "--device", "cpu"]  # fmt: skip
    res = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "1 clip(s) encoded" in res.stdout
    assert CachedLatentDataset(root, 17, (32, 48))[0]["latents"].shape == (16, 5, 4, 6)
