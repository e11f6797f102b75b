"""Dataset, sampler, ConcatDataset, validation and mid-training failure handling (docs/reference.md §5, §12)."""

import warnings

import pytest
import torch
from data_helpers import CARPHONE, make_dataset, truncated_copy
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
    """Workers forked after this process decoded a clip (as a training process does before its loader starts) read
    clips too: PyAV's per-thread swscale pool must not be inherited half-alive (it hung every worker with av 18)."""
    ds = Dataset(dataset_dir, 9, (32, 48))
    assert ds[0]["video"].shape == (3, 9, 32, 48)  # a decode in the parent before the workers fork
    batch = next(iter(DataLoader(ds, batch_size=3, num_workers=2, timeout=60)))  # a hang fails here, not the suite
    assert batch["video"].shape == (3, 3, 9, 32, 48)


def test_dataloader_with_spawned_workers(dataset_dir):
    """The troubleshooting guide's fallback for decoding outside our reader: spawned workers (the dataset pickles)."""
    ds = Dataset(dataset_dir, 9, (32, 48))
    loader = DataLoader(ds, batch_size=3, num_workers=1, multiprocessing_context="spawn", timeout=120)
    assert next(iter(loader))["video"].shape == (3, 3, 9, 32, 48)


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


@pytest.mark.skipif(not CARPHONE.exists(), reason=f"{CARPHONE} not present")
def test_truncated_video_is_found_up_front_and_named_at_training_time(tmp_path):
    """Issue 13 item 10: a truncated file (index at the front) passed validation (only frame 0 was decoded) and
    the training-time skip advised "use a longer clip"."""
    root = make_dataset(tmp_path, {"a": 93})
    truncated_copy(CARPHONE, root / "videos" / "cut.mp4", keep=0.5)  # header: 120 frames; data: 56
    (root / "metas" / "cut.txt").write_text("A car phone call.")
    (root / "t5_xxl" / "cut.pickle").write_bytes((root / "t5_xxl" / "a.pickle").read_bytes())
    report = validate_dataset(root, num_frames=17)
    assert [s.stem for s in report.valid] == ["a"] and len(report.problems) == 1
    assert "cut.mp4: the container claims 120 frames" in report.summary() and "corrupt or truncated" in report.summary()
    ds = Dataset(root, 93, (32, 48), validate=False)  # every 93-frame window of cut.mp4 runs past frame 56
    with pytest.warns(DataLoadWarning, match="cut.mp4.*corrupt or truncated") as record:
        assert ds[1]["video_name"] == "a"
    assert not any("longer clip" in str(w.message) for w in record)


def test_validation_decodes_first_and_last_window_or_everything(dataset_dir, monkeypatch):
    import scripts.validate_dataset as cli
    from cosmos_predict2.data import validation

    calls, real = [], validation.check_video_decodes

    def recording(path, start, count):
        calls.append((path.stem, start, count))
        real(path, start, count)

    monkeypatch.setattr(validation, "check_video_decodes", recording)
    assert validate_dataset(dataset_dir, 9).ok  # a: 33 frames, b: 17, c: 21
    assert calls == [("a", 0, 9), ("a", 24, 9), ("b", 0, 17), ("c", 0, 9), ("c", 12, 9)]
    calls.clear()
    assert cli.main(["--dataset_path", str(dataset_dir), "--num_frames", "9", "--full"]) == 0
    assert calls == [("a", 0, 33), ("b", 0, 17), ("c", 0, 21)]
    calls.clear()
    assert cli.main(["--dataset_path", str(dataset_dir), "--num_frames", "9", "--no_decode"]) == 0 and not calls


def test_num_frames_must_be_4k_plus_1(dataset_dir, capsys):
    """Issue 13 item 14: `validate_dataset --num_frames 10` said clean; the VAE needs 4k+1 frames."""
    import scripts.validate_dataset as cli
    from cosmos_predict2.data.validation import check_num_frames

    assert cli.main(["--dataset_path", str(dataset_dir), "--num_frames", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --num_frames 10 is not 4k+1") and "9 and 13" in err and err.count("\n") == 1
    with pytest.raises(ValueError, match=r"dataloader_train\.dataset\.num_frames=10 is not 4k\+1.*9 and 13"):
        Dataset(dataset_dir, 10, (32, 48))
    for good in (1, 5, 9, 93):
        check_num_frames(good)
    for bad, nearest in ((0, "1 and 5"), (3, "1 and 5"), (94, "93 and 97"), (96, "93 and 97")):
        with pytest.raises(ValueError, match=nearest):
            check_num_frames(bad)
