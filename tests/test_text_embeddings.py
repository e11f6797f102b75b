"""Embedding pickle IO (docs/reference.md §4) and the restricted unpickler (docs/reference.md §12)."""

import os
import pickle

import numpy as np
import pytest
import torch

from cosmos_predict2.text import (
    EmbeddingFileError,
    load_embedding_pickle,
    load_padded_embedding,
    pad_embedding,
    save_embedding_pickle,
)


def test_roundtrip_reference_format(tmp_path):
    emb_N_D = np.random.default_rng(0).standard_normal((7, 1024)).astype(np.float32)
    path = tmp_path / "t5_xxl" / "clip.pickle"
    save_embedding_pickle(path, emb_N_D)
    with open(path, "rb") as f:  # the file itself: list of one float16 [n_tokens, 1024] array
        raw = pickle.load(f)
    assert isinstance(raw, list) and len(raw) == 1
    assert raw[0].dtype == np.float16 and raw[0].shape == (7, 1024)
    loaded = load_embedding_pickle(path)
    np.testing.assert_array_equal(loaded, emb_N_D.astype(np.float16))
    emb_L_D, mask_L = load_padded_embedding(path)
    assert emb_L_D.shape == (512, 1024) and emb_L_D.dtype == torch.float32
    assert mask_L.tolist() == [1] * 7 + [0] * 505
    assert emb_L_D[7:].abs().sum() == 0


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_reads_every_pickle_protocol(tmp_path, protocol):
    path = tmp_path / "x.pickle"
    with open(path, "wb") as f:
        pickle.dump([np.ones((3, 16), np.float16)], f, protocol=protocol)
    assert load_embedding_pickle(path).shape == (3, 16)


class _Malicious:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pickle"
    with open(path, "wb") as f:
        pickle.dump([_Malicious(marker)], f)
    with pytest.raises(EmbeddingFileError) as err:
        load_embedding_pickle(path)
    assert not marker.exists()
    assert "evil.pickle" in str(err.value) and "system" in str(err.value)


def test_object_array_inside_list_is_refused(tmp_path):
    path = tmp_path / "obj.pickle"
    with open(path, "wb") as f:
        pickle.dump([np.array([_Malicious(tmp_path / "m")], dtype=object)], f)
    with pytest.raises(EmbeddingFileError, match="obj.pickle"):
        load_embedding_pickle(path)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "payload, message",
    [
        (np.ones((3, 8), np.float16), "list holding one array"),
        ([np.ones((3, 8), np.float16)] * 2, "length 2"),
        (["text"], "numpy float array"),
        ([np.ones((3, 8), np.int64)], "numpy float array"),
        ([np.ones((8,), np.float16)], "shape"),
        ([np.ones((600, 8), np.float16)], "maximum 512"),
        ([np.full((2, 8), np.nan, np.float32)], "NaN"),
        ({"emb": 1}, "dict"),
    ],
)
def test_malformed_pickles_name_the_file(tmp_path, payload, message):
    path = tmp_path / "bad.pickle"
    with open(path, "wb") as f:
        pickle.dump(payload, f)
    with pytest.raises(EmbeddingFileError, match=message) as err:
        load_embedding_pickle(path)
    assert str(path) in str(err.value)


def test_missing_empty_and_truncated_files(tmp_path):
    with pytest.raises(EmbeddingFileError, match="not found"):
        load_embedding_pickle(tmp_path / "missing.pickle")
    (tmp_path / "empty.pickle").write_bytes(b"")
    with pytest.raises(EmbeddingFileError, match="empty.pickle.*0 bytes"):
        load_embedding_pickle(tmp_path / "empty.pickle")
    good = pickle.dumps([np.ones((4, 8), np.float16)])
    (tmp_path / "trunc.pickle").write_bytes(good[: len(good) // 2])
    with pytest.raises(EmbeddingFileError, match="trunc.pickle"):
        load_embedding_pickle(tmp_path / "trunc.pickle")


def test_pad_embedding_width_follows_input():
    emb_L_D, mask_L = pad_embedding(np.ones((5, 64), np.float16))
    assert emb_L_D.shape == (512, 64) and int(mask_L.sum()) == 5
