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


def test_video_and_cached_samples_share_one_layout(cached):
    video = Dataset(cached, 17, (32, 48))[1]
    latent = Dataset(cached, 17, (32, 48), use_cached_latents=True)[1]
    assert list(video)[1:] == list(latent)[1:] and (next(iter(video)), next(iter(latent))) == ("video", "latents")
    for key in list(video)[1:]:
        a, b = video[key], latent[key]
        assert type(a) is type(b), key
        if isinstance(a, torch.Tensor):
            assert (a.dtype, a.shape) == (b.dtype, b.shape), key
            torch.testing.assert_close(a, b)  # same clip "b": same text, masks and sizes
        else:
            assert a == b, key


def _fake_tokenizer_file(path, content=b"weights v1"):
    path.write_bytes(content)
    return path


def test_stale_tokenizer_sha256_is_detected_without_the_vae(cached, tok, tmp_path, monkeypatch):
    from cosmos_predict2.configs.lazy import L
    from cosmos_predict2.data.latent_cache import tokenizer_sha256
    from cosmos_predict2.training.data import build_train_loader

    weights = _fake_tokenizer_file(tmp_path / "tokenizer.pth")
    build_latent_cache(cached, tok, 17, (32, 48), windows_per_clip=3, tokenizer_path=weights)
    folder = cache_dir(cached, 17, (32, 48))
    CachedLatentDataset(cached, 17, (32, 48), tokenizer_path=weights)  # matches
    old_sha = tokenizer_sha256(weights)
    _fake_tokenizer_file(weights, b"weights v2!")  # other size: not the memoised hash
    monkeypatch.setattr(WanVAETokenizer, "from_pretrained", lambda *a, **k: pytest.fail("VAE loaded"))
    with pytest.raises(StaleLatentCacheError) as err:
        CachedLatentDataset(cached, 17, (32, 48), tokenizer_path=weights)
    text = str(err.value)
    for needle in (str(folder), old_sha, tokenizer_sha256(weights), "python -m scripts.cache_latents", "--overwrite"):
        assert needle in text, needle
    # The training path: the loader builder checks the dataset against the model's tokenizer file.
    cfg = L(DataLoader)(dataset=L(Dataset)(dataset_dir=str(cached), num_frames=17, video_size=[32, 48],
                                           use_cached_latents=True))  # fmt: skip
    with pytest.raises(StaleLatentCacheError, match="tokenizer sha256: recorded"):
        build_train_loader(cfg, seed=0, start_batch=0, tokenizer_path=str(weights))
    build_train_loader(cfg, seed=0, start_batch=0)  # no tokenizer file to compare (e.g. a random tiny VAE)


def test_cache_from_in_memory_vae_is_stale_for_a_tokenizer_file(cached, tmp_path):
    weights = _fake_tokenizer_file(tmp_path / "tokenizer.pth")
    with pytest.raises(StaleLatentCacheError, match="recorded None \\(an in-memory VAE"):
        CachedLatentDataset(cached, 17, (32, 48), tokenizer_path=weights)


def test_absent_tokenizer_file_warns_instead_of_failing(cached, tok, tmp_path):
    from cosmos_predict2.data.latent_cache import LatentCacheWarning

    weights = _fake_tokenizer_file(tmp_path / "tokenizer.pth")
    build_latent_cache(cached, tok, 17, (32, 48), windows_per_clip=3, tokenizer_path=weights)
    weights.unlink()  # training from latents needs no VAE: the file may not be on this machine
    with pytest.warns(LatentCacheWarning, match="tokenizer weights not found at .*tokenizer.pth"):
        CachedLatentDataset(cached, 17, (32, 48), tokenizer_path=weights)


def test_stale_resize_mode_is_detected(cached):
    Dataset(cached, 17, (32, 48), use_cached_latents=True, resize_mode="cover")  # the cache's mode
    with pytest.raises(StaleLatentCacheError, match="resize_mode: recorded 'cover', current 'stretch'") as err:
        Dataset(cached, 17, (32, 48), use_cached_latents=True, resize_mode="stretch")
    assert "--resize_mode stretch --overwrite" in str(err.value)


def test_old_cache_without_the_new_fields_warns_once(cached, tmp_path):
    import json
    import warnings

    from cosmos_predict2.data.latent_cache import LatentCacheWarning

    manifest = cache_dir(cached, 17, (32, 48)) / "manifest.json"
    m = json.loads(manifest.read_text())
    for key in ("tokenizer_sha256", "tokenizer_path", "resize_mode"):
        del m[key]
    manifest.write_text(json.dumps({**m, "version": 1}))
    weights = _fake_tokenizer_file(tmp_path / "tokenizer.pth")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            ds = Dataset(cached, 17, (32, 48), use_cached_latents=True)
            ds.check_tokenizer(weights)
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, LatentCacheWarning))
    assert len(messages) == 2 and "`resize_mode`" in messages[0] and "`tokenizer_sha256`" in messages[1], messages
    assert ds[0]["latents"].shape == (16, 5, 4, 6)


def test_tokenizer_sha256_of_files_and_folders(tmp_path):
    import hashlib

    from cosmos_predict2.data.latent_cache import tokenizer_sha256
    from cosmos_predict2.io import _sha256 as _file_sha256  # the one memoised file hash

    weights = _fake_tokenizer_file(tmp_path / "tokenizer.pth")
    assert tokenizer_sha256(weights) == hashlib.sha256(b"weights v1").hexdigest()
    hits = _file_sha256.cache_info().hits
    tokenizer_sha256(weights)
    assert _file_sha256.cache_info().hits == hits + 1  # memoised: a run reads the big file once
    for name in ("a", "b"):  # a pipeline folder whose vae/ is loaded: the folder's location does not matter
        (tmp_path / name / "vae").mkdir(parents=True)
        (tmp_path / name / "vae" / "config.json").write_text("{}")
        (tmp_path / name / "vae" / "model.safetensors").write_bytes(b"w")
    assert tokenizer_sha256(tmp_path / "a") == tokenizer_sha256(tmp_path / "b") == tokenizer_sha256(tmp_path / "a/vae")
    (tmp_path / "b" / "vae" / "model.safetensors").write_bytes(b"w2")
    assert tokenizer_sha256(tmp_path / "a") != tokenizer_sha256(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        tokenizer_sha256(tmp_path / "missing.pth")


def test_cache_latents_script_records_the_tokenizer(tmp_path, tok):
    import json

    from cosmos_predict2.data.latent_cache import tokenizer_sha256
    from scripts.cache_latents import main

    root = make_dataset(tmp_path / "ds", {"a": 17})
    tok.vae.save_pretrained(tmp_path / "vae")
    args = ["--dataset_path", str(root), "--num_frames", "17", "--height", "32", "--width", "48", "--device", "cpu"]
    assert main([*args, "--tokenizer_path", str(tmp_path / "vae"), "--resize_mode", "stretch"]) == 0
    m = json.loads((cache_dir(root, 17, (32, 48)) / "manifest.json").read_text())
    assert m["tokenizer_sha256"] == tokenizer_sha256(tmp_path / "vae") and m["resize_mode"] == "stretch"
    assert m["tokenizer_path"] == str(tmp_path / "vae")
