"""Checkpoint layout, atomic writes, and the 2B/14B trainable counts on the meta device."""

from __future__ import annotations

import os

import pytest
import torch

from cosmos_predict2.training.checkpointer import (
    PARTS,
    Checkpointer,
    CheckpointError,
    atomic_torch_save,
    atomic_write_text,
    checkpoint_name,
)
from cosmos_predict2.training.model import Video2WorldModel, model_config_dict


def test_checkpoint_names_and_latest(tmp_path):
    assert checkpoint_name(1000) == "iter_000001000.pt"
    ck = Checkpointer(tmp_path, save_iter=10)
    assert ck.latest_iteration() is None
    (tmp_path / "checkpoints").mkdir()
    atomic_write_text(tmp_path / "checkpoints" / "latest_checkpoint.txt", "iter_000000400.pt\n")
    assert ck.latest_iteration() == 400
    assert ck.path("optim", 400) == tmp_path / "checkpoints" / "optim" / "iter_000000400.pt"
    atomic_write_text(tmp_path / "checkpoints" / "latest_checkpoint.txt", "garbage")
    with pytest.raises(CheckpointError, match="unexpected content"):
        ck.latest_iteration()


def test_atomic_save_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "model" / "iter_000000001.pt"
    atomic_torch_save({"a": torch.ones(2)}, path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # a kill between writing the temp file and the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == [path.name]


@pytest.mark.parametrize(
    "size,rank,targets,expected",
    [
        ("2B", 16, "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2", 22_937_600),
        ("2B", 8, "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2", 11_468_800),
        ("2B", 32, "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2", 45_875_200),
        ("2B", 16, "q_proj,k_proj,v_proj,output_proj", 13_762_560),
        ("14B", 32, "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2", 143_917_056),
    ],
)
def test_trainable_counts_on_meta(size, rank, targets, expected):
    model = Video2WorldModel(model_config_dict(model_size=size, train_architecture="lora", lora_rank=rank,
                                               lora_alpha=rank, lora_target_modules=targets))  # fmt: skip
    total, trainable = model.check_trainable()
    assert trainable == expected
    base = {"2B": 1_956_413_440, "14B": 14_265_285_632}[size]
    assert total == base + trainable


def test_full_finetuning_trains_all_parameters_on_meta():
    model = Video2WorldModel(model_config_dict(model_size="2B", train_architecture="base"))
    assert model.check_trainable() == (1_956_413_440, 1_956_413_440)


def test_invalid_model_config_fields_are_named():
    with pytest.raises(ValueError, match="model.config.train_architecture='qlora'"):
        Video2WorldModel(model_config_dict(train_architecture="qlora"))
    with pytest.raises(ValueError, match="unknown model.config fields"):
        Video2WorldModel({**model_config_dict(), "lora_rnak": 3})
    with pytest.raises(ValueError, match="model.config.min_num_conditional_frames"):
        Video2WorldModel(model_config_dict(min_num_conditional_frames=3))


# --- faults (issue 13): damaged sets, temporary files, the job lock, signals --------------------------------------


class _DictPart:
    """A checkpoint part holding one tensor (what the checkpointer sees of a real part)."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = torch.tensor([value])

    def state_dict(self, is_main: bool) -> dict:
        return {"v": self.value.clone()}

    def load_state_dict(self, state, source: str) -> None:
        self.value = state["v"].clone()


def _saved_sets(tmp_path, iterations=(1, 2, 3)) -> Checkpointer:
    ck = Checkpointer(tmp_path, save_iter=1)
    for it in iterations:
        ck.save(it, {name: _DictPart(it) for name in PARTS})
    return ck


@pytest.mark.parametrize("damage", ["truncated", "empty", "missing"])
@pytest.mark.parametrize("part", ["model", "optim", "scheduler", "trainer"])
def test_resume_falls_back_past_a_damaged_set_naming_the_file(tmp_path, caplog, part, damage):
    ck = _saved_sets(tmp_path)
    path = ck.path(part, 3)
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:100] if damage == "truncated" else b"")
    with caplog.at_level("WARNING"):
        iteration, states = ck.choose_resume()
    assert iteration == 2 and float(states["model"]["v"]) == 2.0
    assert "Cannot resume from iter_000000003.pt: " in caplog.text and str(path) in caplog.text
    assert "Falling back to the previous complete set, iter_000000002.pt." in caplog.text


def test_resume_without_latest_takes_the_newest_complete_set(tmp_path, caplog):
    ck = _saved_sets(tmp_path)
    (ck.dir / "latest_checkpoint.txt").unlink()
    ck.path("trainer", 3).unlink()  # iteration 3 incomplete (a kill between two parts)
    with caplog.at_level("WARNING"):
        assert ck.choose_resume()[0] == 2
    expected = "latest_checkpoint.txt is missing: resuming from the newest complete checkpoint set, iter_000000002.pt"
    assert expected in caplog.text
    atomic_write_text(ck.dir / "latest_checkpoint.txt", "garbage")
    assert ck.choose_resume()[0] == 2  # unreadable latest: a warning, not an edit by hand


def test_resume_refuses_when_no_set_is_readable(tmp_path, caplog):
    ck = _saved_sets(tmp_path, (1, 2))
    for it in (1, 2):
        ck.path("optim", it).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no complete checkpoint set to resume from in .*checkpoints \(8 "
                       r"checkpoint file\(s\).*optim checkpoint .*iter_000000002.pt is empty.*Starting again from "
                       r"iteration 0 would overwrite them"):
        ck.choose_resume()
    # a kill during the very first save: no set was ever complete, no latest -> start at 0 (with a warning)
    fresh = Checkpointer(tmp_path / "fresh", save_iter=1)
    atomic_torch_save({"v": torch.ones(1)}, fresh.path("model", 1))
    with caplog.at_level("WARNING"):
        assert fresh.choose_resume() is None
    assert "Ignoring 1 file(s) of incomplete checkpoint sets" in caplog.text
    assert Checkpointer(tmp_path / "empty", save_iter=1).choose_resume() is None


def test_set_aside_and_point_latest_at(tmp_path):
    ck = _saved_sets(tmp_path)
    moved = ck.set_aside([3])
    assert sorted(p.name for p in moved) == ["iter_000000003.pt.diverged"] * 4
    assert ck.complete_iterations() == [2, 1]
    ck.point_latest_at(1)
    assert ck.latest_iteration() == 1
    ck.point_latest_at(None)
    assert ck.latest_iteration() is None


def test_remove_temporary_files_only_removes_the_atomic_writers_names(tmp_path):
    from cosmos_predict2.io import remove_temporary_files, temporary_name

    mine = temporary_name(tmp_path / "a").name  # this process's own temporary file: it may be writing it
    keep = [".hidden", ".iter_000000001.pt.tmp-", ".x.tmp-12a", "iter_000000001.pt", mine]
    gone = [".iter_000000001.pt.tmp-999999", ".latest_checkpoint.txt.tmp-1"]
    for name in keep + gone:
        (tmp_path / name).write_text("x")
    assert sorted(p.name for p in remove_temporary_files(tmp_path)) == sorted(gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert remove_temporary_files(tmp_path / "absent") == []


def test_job_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    import json

    from cosmos_predict2.training.lock import JobLock, JobLockedError

    first = JobLock(tmp_path).acquire()
    record = json.loads((tmp_path / "job.lock").read_text())
    assert record["pid"] == os.getpid() and record["command"]
    with pytest.raises(JobLockedError, match=rf"{tmp_path} is in use by another training run \(pid {os.getpid()} "
                                             r"on .*kill \d+\), or give this run another job.name"):
        JobLock(tmp_path).acquire()
    first.release()
    JobLock(tmp_path).acquire().release()  # released: the next run gets it


def test_job_lock_is_released_when_its_holder_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from cosmos_predict2.training.lock import JobLock

    code = ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', "
            "flush=True); time.sleep(60)")  # the same flock JobLock takes, without importing torch
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "job.lock")], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RuntimeError, match="is in use by another training run"):
        JobLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    time.sleep(0.05)
    JobLock(tmp_path).acquire().release()


def test_every_rank_refuses_when_rank_0_cannot_lock(tmp_path, monkeypatch):
    """Rank 0's verdict is broadcast before any other collective: a rank that is not rank 0 raises the same error."""
    import torch.distributed as dist

    from cosmos_predict2.parallel import ProcessInfo
    from cosmos_predict2.training import trainer
    from cosmos_predict2.training.lock import JobLockedError

    def broadcast(objects, src):  # what rank 0 sends when its JobLock.acquire was refused
        objects[0] = "JOB is in use by another training run (pid 4242 on host, started ...: python -m scripts.train)"

    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
    with pytest.raises(JobLockedError, match="pid 4242"):
        trainer._lock_job_dir(tmp_path, ProcessInfo(rank=1, world_size=2))
    assert not (tmp_path / "job.lock").exists()  # only rank 0 touches the lock file


def test_command_line_rebuilds_the_users_command(monkeypatch):
    from cosmos_predict2.training.lock import command_line

    argv = ["/repo/scripts/train.py", "--config=cosmos_predict2/configs/base/config.py", "--", "experiment=x",
            "optimizer.lr=1e6", "job.name=a b"]  # fmt: skip
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert command_line(argv, replace={"optimizer.lr": "1e+05"}) == (
        "python -m scripts.train --config=cosmos_predict2/configs/base/config.py -- experiment=x 'job.name=a b' "
        "optimizer.lr=1e+05")  # fmt: skip
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert command_line(argv[:4]).startswith("torchrun --nproc_per_node=8 --nnodes=2 -m scripts.train --config=")


def test_signals_request_a_stop_and_a_second_ctrl_c_exits_at_once(monkeypatch):
    import signal

    from cosmos_predict2.training.trainer import TrainingInterrupted, _StopRequests

    before = signal.getsignal(signal.SIGTERM)
    with _StopRequests() as stops:
        signal.raise_signal(signal.SIGTERM)
        assert stops.signum == signal.SIGTERM  # flag only: the loop saves after the step
        signal.raise_signal(signal.SIGTERM)  # SIGTERM never escalates (torchrun and Slurm both send one)
        signal.raise_signal(signal.SIGINT)  # within SAME_PRESS_S: the same Ctrl-C, forwarded by torchrun
        monkeypatch.setattr(_StopRequests, "SAME_PRESS_S", 0.0)
        with pytest.raises(TrainingInterrupted, match="SIGINT again: stopped at once") as e:
            signal.raise_signal(signal.SIGINT)
        assert e.value.code == 130
    assert signal.getsignal(signal.SIGTERM) is before
