"""Dataset, sampler, ConcatDataset, validation and mid-training failure handling (docs/reference.md §5, §12)."""

import warnings

import pytest
import torch
from data_helpers import make_dataset
from torch.utils.data import ConcatDataset, DataLoader

from cosmos_predict2.data import DataLoadWarning, Dataset, DatasetValidationError, get_sampler, validate_dataset


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"), {"a": 33, "b": 17, "c": 21})


def test_sample_dict(dataset_dir):
    ds = Dataset(dataset_dir, num_frames=17, video_size=(32, 48))
    assert len(ds) == 3
    s = ds[1]  # "b": exactly 17 frames is valid (docs/reference.md §12)
    assert s["video"].shape == (3, 17, 32, 48) and s["video"].dtype == torch.uint8
    assert s["t5_text_embeddings"].shape == (512, 32) and s["t5_text_mask"].shape == (512,)
    assert int(s["t5_text_mask"].sum()) == 5 and s["t5_text_embeddings"][5:].abs().sum() == 0
    assert s["fps"] == 16.0 and s["num_frames"] == 17 and s["video_name"] == "b"
    assert s["image_size"].tolist() == [32, 48, 32, 48]
    assert s["padding_mask"].shape == (1, 32, 48) and s["padding_mask"].abs().sum() == 0


def test_sampler_without_distributed(dataset_dir):
    ds = Dataset(dataset_dir, 17, (32, 48))
    sampler = get_sampler(ds)
    assert sampler.num_replicas == 1 and sampler.rank == 0 and sampler.shuffle and sampler.seed == 0
    assert sorted(sampler) == [0, 1, 2]
    assert get_sampler(ds, num_replicas=2, rank=1).num_samples == 2


def test_concat_dataset_through_dataloader(dataset_dir, tmp_path):
    other = make_dataset(tmp_path / "other", {"x": 17})
    ds = ConcatDataset([Dataset(dataset_dir, 17, (32, 48)), Dataset(other, 17, (32, 48))])
    loader = DataLoader(ds, batch_size=2, sampler=get_sampler(ds), num_workers=0)
    names = []
    for batch in loader:
        assert batch["video"].shape[1:] == (3, 17, 32, 48) and batch["t5_text_embeddings"].shape[1:] == (512, 32)
        names += batch["video_name"]
    assert sorted(names) == ["a", "b", "c", "x"]


def test_dataloader_with_workers(dataset_dir):
    ds = Dataset(dataset_dir, 9, (32, 48))
    batch = next(iter(DataLoader(ds, batch_size=3, num_workers=2)))
    assert batch["video"].shape == (3, 3, 9, 32, 48)


def _broken_dataset(root):
    root = make_dataset(root, {"good": 17, "short": 9, "nometa": 17, "badmeta": 17, "noemb": 17, "bademb": 17})
    (root / "metas" / "nometa.txt").unlink()
    (root / "metas" / "badmeta.txt").write_bytes(b"caf\xe9")
    (root / "t5_xxl" / "noemb.pickle").unlink()
    (root / "t5_xxl" / "bademb.pickle").write_bytes(b"not a pickle")
    (root / "videos" / "zero.mp4").write_bytes(b"")
    (root / "videos" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 500)
    (root / "metas" / "orphan.txt").write_text("prompt without video")
    return root


def test_validation_reports_all_problems_with_names(tmp_path):
    root = _broken_dataset(tmp_path)
    report = validate_dataset(root, num_frames=17)
    text = report.summary()
    assert [s.stem for s in report.valid] == ["good"]
    needles = ["short.mp4", "only 9 frames", "nometa.txt", "badmeta.txt", "UTF-8", "noemb.pickle"]
    needles += ["bademb.pickle", "zero.mp4", "0 bytes", "corrupt.mp4", "orphan.txt", "no matching video"]
    for needle in needles:
        assert needle in text, needle
    with pytest.raises(DatasetValidationError, match="orphan.txt") as err:
        Dataset(root, 17, (32, 48))
    assert "on_invalid='skip'" in str(err.value)
    with pytest.warns(DataLoadWarning, match="corrupt.mp4"):
        ds = Dataset(root, 17, (32, 48), on_invalid="skip")
    assert len(ds) == 1 and ds[0]["video_name"] == "good"


def test_embedding_width_mismatch_is_reported(tmp_path):
    import numpy as np

    from cosmos_predict2.text import save_embedding_pickle

    root = make_dataset(tmp_path, {"a": 17, "b": 17, "c": 17})
    save_embedding_pickle(root / "t5_xxl" / "c.pickle", np.ones((4, 16), np.float32))
    report = validate_dataset(root, 17)
    assert len(report.problems) == 1 and "c.pickle" in str(report.problems[0]) and "width 16" in report.summary()


def test_file_failing_mid_training_is_skipped(tmp_path):
    root = make_dataset(tmp_path, {"a": 17, "b": 17})
    ds = Dataset(root, 17, (32, 48))
    (root / "videos" / "a.mp4").write_bytes(b"garbage")  # breaks after validation
    with pytest.warns(DataLoadWarning, match="a.mp4"):
        sample = ds[0]
    assert sample["video_name"] == "b"
    (root / "t5_xxl" / "b.pickle").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataLoadWarning)
        with pytest.raises(RuntimeError, match="every sample"):
            ds[1]
