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


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_invalid_existing_pickles_are_re_embedded_and_empty_prompts_reported(tiny_t5, tmp_path):
    """Issue 13 items 11, 12: unreadable or malicious existing pickles counted as "already present" with
    "failed: 0"; an empty metas/*.txt must be reported, not embedded."""
    from cosmos_predict2.text import save_embedding_pickle

    metas, t5 = tmp_path / "metas", tmp_path / "t5_xxl"
    metas.mkdir()
    t5.mkdir()
    for stem in ("good", "evil", "trunc", "empty", "blank"):
        (metas / f"{stem}.txt").write_text(f"A video of {stem}.", encoding="utf-8")
    (metas / "empty.txt").write_text("")
    (metas / "blank.txt").write_text(" \n\t\u200b\n")
    save_embedding_pickle(t5 / "good.pickle", np.ones((3, 32), np.float32))
    save_embedding_pickle(t5 / "blank.pickle", np.ones((3, 32), np.float32))  # stale: its prompt is now empty
    marker = tmp_path / "PWNED"
    (t5 / "evil.pickle").write_bytes(pickle.dumps([_RunsShell(marker)]))
    (t5 / "trunc.pickle").write_bytes((t5 / "good.pickle").read_bytes()[:60])
    res = _run(["-m", "scripts.get_t5_embeddings", "--dataset_path", str(tmp_path), "--t5_path", str(tiny_t5)])
    out = res.stdout
    assert res.returncode == 1, res.stderr
    assert "embeddings written: 2 (2 replacing invalid existing files), already present (skipped): 1, failed: 2" in out
    assert f"REPLACED {t5 / 'evil.pickle'}: unsafe or invalid embedding pickle: refusing to load global" in out
    assert f"REPLACED {t5 / 'trunc.pickle'}: " in out and "truncated" in out
    for stem in ("empty", "blank"):
        assert f"FAILED {metas / stem}.txt: prompt file is empty (or whitespace only), nothing to embed" in out
    assert not marker.exists() and not (t5 / "empty.pickle").exists()
    assert load_embedding_pickle(t5 / "evil.pickle").shape[1] == 32 and load_embedding_pickle(t5 / "trunc.pickle").any()


def test_nemo_assets_script_refuses_empty_prompt_and_replaces_invalid_pickles(tiny_t5, tmp_path, capsys):
    from scripts.get_t5_embeddings_from_cosmos_nemo_assets import main

    (tmp_path / "videos").mkdir()
    for stem in ("v0", "v1", "v2"):
        (tmp_path / "videos" / f"{stem}.mp4").write_bytes(b"")
    for prompt in ("", "   "):
        assert main(["--dataset_path", str(tmp_path), "--prompt", prompt, "--t5_path", str(tiny_t5)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --prompt {prompt!r} is empty") and err.count("\n") == 1, err
    assert not (tmp_path / "metas").exists()  # refused before writing anything
    (tmp_path / "metas").mkdir()
    (tmp_path / "metas" / "v2.txt").write_text("\n")
    (tmp_path / "t5_xxl").mkdir()
    (tmp_path / "t5_xxl" / "v0.pickle").write_bytes(b"garbage")
    assert main(["--dataset_path", str(tmp_path), "--prompt", "A robot.", "--t5_path", str(tiny_t5)]) == 1
    out = capsys.readouterr().out
    assert "embeddings written: 2 (1 replacing invalid existing files), already present (skipped): 0, failed: 1" in out
    assert "REPLACED" in out and "v0.pickle" in out and "v2.txt: prompt file is empty" in out
    assert load_embedding_pickle(tmp_path / "t5_xxl" / "v0.pickle").shape[1] == 32
    assert not (tmp_path / "t5_xxl" / "v2.pickle").exists()
