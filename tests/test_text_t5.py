"""T5 text encoder with a tiny offline T5, and the two embedding scripts."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cosmos_predict2.text import T5CheckpointNotFoundError, T5TextEncoder, load_embedding_pickle
from demo.tiny_t5 import make_tiny_t5

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    return make_tiny_t5(tmp_path_factory.mktemp("t5"), d_model=32)


def test_encode_zeroes_rows_past_real_tokens(tiny_t5):
    enc = T5TextEncoder(tiny_t5, device="cpu")
    emb_B_L_D, mask_B_L = enc.encode(["A video of sks teal robot.", "hi"])
    assert emb_B_L_D.shape == (2, 512, 32) and mask_B_L.shape == (2, 512)
    for b in range(2):
        n = int(mask_B_L[b].sum())
        assert n >= 2  # at least one token plus </s>
        assert emb_B_L_D[b, :n].abs().sum(-1).min() > 0
        assert emb_B_L_D[b, n:].abs().sum() == 0
    # Padding does not change the real rows: the same prompt alone gives the same embedding.
    alone_1_L_D, _ = enc.encode(["hi"])
    torch.testing.assert_close(alone_1_L_D[0], emb_B_L_D[1], atol=1e-5, rtol=1e-5)


def test_truncation_to_512_tokens(tiny_t5):
    enc = T5TextEncoder(tiny_t5, device="cpu")
    _, mask_B_L = enc.encode([" ".join(["robot"] * 800)])
    assert int(mask_B_L.sum()) == 512


def test_bf16_and_offload(tiny_t5):
    enc = T5TextEncoder(tiny_t5, dtype=torch.bfloat16, device="cpu", offload_after_use=True)
    emb_B_L_D, _ = enc.encode(["a robot"])
    assert emb_B_L_D.dtype == torch.float32 and next(enc.model.parameters()).dtype == torch.bfloat16
    trimmed = enc.encode_trimmed(["a robot"])[0]
    assert trimmed.dtype == np.float16 and trimmed.shape[1] == 32


def test_missing_t5_folder_is_a_clear_error(tmp_path):
    with pytest.raises(T5CheckpointNotFoundError, match="checkpoints/google-t5/t5-11b"):
        T5TextEncoder(tmp_path / "nope")


def _run(args, cwd=REPO, env_pythonpath=True):
    import os

    env = dict(os.environ)
    if env_pythonpath:
        env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_get_t5_embeddings_script(tiny_t5, tmp_path):
    metas = tmp_path / "metas"
    metas.mkdir()
    (metas / "a.txt").write_text("A video of a car.", encoding="utf-8")
    (metas / "b.txt").write_text("The robot is teal.", encoding="utf-8")
    (metas / "bad.txt").write_bytes(b"\xff\xfe caf\xe9")
    res = _run(["-m", "scripts.get_t5_embeddings", "--dataset_path", str(tmp_path), "--t5_path", str(tiny_t5)])
    assert res.returncode == 1, res.stderr
    assert "bad.txt" in res.stdout and "UTF-8" in res.stdout
    for stem in ("a", "b"):
        with open(tmp_path / "t5_xxl" / f"{stem}.pickle", "rb") as f:
            raw = pickle.load(f)
        assert isinstance(raw, list) and raw[0].dtype == np.float16 and raw[0].shape[1] == 32
    # Existing files are skipped, not rewritten.
    mtime = (tmp_path / "t5_xxl" / "a.pickle").stat().st_mtime_ns
    res = _run(["-m", "scripts.get_t5_embeddings", "--dataset_path", str(tmp_path), "--t5_path", str(tiny_t5)])
    assert "already present (skipped): 2" in res.stdout
    assert (tmp_path / "t5_xxl" / "a.pickle").stat().st_mtime_ns == mtime


def test_nemo_assets_script_as_file_and_module(tiny_t5, tmp_path):
    (tmp_path / "videos").mkdir()
    for stem in ("v0", "v1"):
        (tmp_path / "videos" / f"{stem}.mp4").write_bytes(b"")  # only the names matter to this script
    script = "scripts/get_t5_embeddings_from_cosmos_nemo_assets.py"
    args = ["--dataset_path", str(tmp_path), "--prompt", "A video of sks teal robot.", "--t5_path", str(tiny_t5)]
    res = _run([script, *args])
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "metas" / "v0.txt").read_text(encoding="utf-8").strip() == "A video of sks teal robot."
    a, b = (load_embedding_pickle(tmp_path / "t5_xxl" / f"{s}.pickle") for s in ("v0", "v1"))
    np.testing.assert_array_equal(a, b)
    res = _run(["-m", "scripts.get_t5_embeddings_from_cosmos_nemo_assets", *args])
    assert res.returncode == 0 and "already present (skipped): 2" in res.stdout


def test_nemo_assets_script_images_and_missing_t5(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "img.jpg").write_bytes(b"")
    res = _run(
        [
            "scripts/get_t5_embeddings_from_cosmos_nemo_assets.py",
            "--dataset_path",
            str(tmp_path),
            "--is_image",
            "--t5_path",
            str(tmp_path / "missing_t5"),
        ],
        env_pythonpath=False,
    )
    assert res.returncode == 2
    assert "missing_t5" in res.stderr and "google-t5/t5-11b" in res.stderr
    assert (tmp_path / "metas" / "img.txt").exists()
