"""Checkpoint layout, atomic writes, and the 2B/14B trainable counts on the meta device."""

from __future__ import annotations

import os

import pytest
import torch

from cosmos_predict2.training.checkpointer import (
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
