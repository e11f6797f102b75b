"""User errors (issue 13): the adapter's base checked at inference (item 8), override types and dataset constraints
at config time (item 14), dataset arguments settable as documented (item 15), one error line instead of a
traceback from scripts.train (item 16)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from cosmos_predict2.configs.compose import ConfigError, compose_config
from cosmos_predict2.io import cached_file_sha256, sha256_cache_file

CONFIG = "cosmos_predict2/configs/base/config.py"
TINY = "experiment=predict2_video2world_lora_training_tiny_example"


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    monkeypatch.delenv("COSMOS_DEBUG", raising=False)
    monkeypatch.delenv("RANK", raising=False)


# --- item 8: the base of an adapter ------------------------------------------------------------------------------


def test_sha256_is_cached_across_runs_by_path_size_and_mtime(tmp_path, monkeypatch):
    import cosmos_predict2.io as io

    f = tmp_path / "base.pt"
    f.write_bytes(b"weights v1")
    assert cached_file_sha256(f) == hashlib.sha256(b"weights v1").hexdigest()
    cache = json.loads(sha256_cache_file().read_text())
    assert sha256_cache_file().parent == tmp_path / "xdg_cache/cosmos_predict2"
    assert cache[str(f.resolve())]["sha256"] == hashlib.sha256(b"weights v1").hexdigest()

    def no_hashing(path):
        raise AssertionError("hashed again")

    monkeypatch.setattr(io, "file_sha256", no_hashing)  # a new run: no in-process memo, the JSON file answers
    assert cached_file_sha256(f) == hashlib.sha256(b"weights v1").hexdigest()
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    f.write_bytes(b"weights version 2")  # rewritten: other size and mtime -> hashed again
    assert cached_file_sha256(f) == hashlib.sha256(b"weights version 2").hexdigest()
    sha256_cache_file().write_text("{not json")  # a corrupt cache only costs a hash
    assert cached_file_sha256(f) == hashlib.sha256(b"weights version 2").hexdigest()


def _adapter(path, base: dict):
    from cosmos_predict2.lora import LoraSpec, adapter_checkpoint

    path.parent.mkdir(parents=True, exist_ok=True)
    spec = LoraSpec(rank=4, alpha=4, target_modules="q_proj")
    torch.save(adapter_checkpoint({"blocks.0.q_proj.lora_A.default.weight": torch.zeros(4, 8)}, spec, base), path)
    return path


def _base_record(path, dit_path=None) -> dict:
    return {"model_size": "tiny", "dit_path": str(dit_path or path), "dit_path_abs": str(path.resolve()),
            "size": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_a_different_base_is_refused_naming_both_files(tmp_path):
    from cosmos_predict2.inference.model_loading import BaseMismatchError, LoraFlags, check_base_identity, load_lora_net

    trained, same_size, other_size = tmp_path / "base.pt", tmp_path / "other.pt", tmp_path / "bigger.pt"
    trained.write_bytes(b"A" * 64)
    same_size.write_bytes(b"B" * 64)
    other_size.write_bytes(b"B" * 65)
    adapter = _adapter(tmp_path / "job/checkpoints/model/iter_000000010.pt", _base_record(trained))
    recorded, current = hashlib.sha256(b"A" * 64).hexdigest(), hashlib.sha256(b"B" * 64).hexdigest()
    with pytest.raises(BaseMismatchError) as e:
        load_lora_net(adapter, None, torch.device("cpu"), torch.float32, LoraFlags(base_dit_path=str(same_size)))
    message = str(e.value)
    for needle in (str(adapter), str(trained), str(same_size), recorded[:12], current[:12], "--allow_base_mismatch"):
        assert needle in message, (needle, message)
    with pytest.raises(BaseMismatchError, match="has 65 bytes"):  # the size alone decides: nothing is hashed
        load_lora_net(adapter, None, torch.device("cpu"), torch.float32, LoraFlags(base_dit_path=str(other_size)))
    base = _base_record(trained)
    assert "not checked: --allow_base_mismatch" in check_base_identity(adapter, base, same_size, allow_mismatch=True)
    assert "as recorded" in check_base_identity(adapter, base, trained)
    old = {k: base[k] for k in ("model_size", "dit_path", "sha256")}  # an adapter from before `size`
    with pytest.raises(BaseMismatchError):
        check_base_identity(adapter, old, same_size)
    assert "not recorded" in check_base_identity(adapter, {**old, "sha256": ""}, same_size)


def test_recorded_base_resolves_from_anywhere(tmp_path, monkeypatch):
    from cosmos_predict2.inference.model_loading import resolve_base_path

    repo = tmp_path / "repo"
    (repo / "checkpoints/nvidia").mkdir(parents=True)
    base_file = repo / "checkpoints/nvidia/model.pt"
    base_file.write_bytes(b"base")
    adapter = repo / "checkpoints/posttraining/g/n/checkpoints/model/iter_000000010.pt"
    relative = "checkpoints/nvidia/model.pt"  # as configured, relative to the training folder
    monkeypatch.chdir(tmp_path)  # elsewhere
    base = _base_record(base_file, dit_path=relative)
    assert resolve_base_path(adapter, base, None) == (base_file.resolve(), "recorded dit_path_abs")
    old = {"model_size": "tiny", "dit_path": relative, "sha256": ""}  # before dit_path_abs: found above the adapter
    path, how = resolve_base_path(adapter, old, None)
    assert path.resolve() == base_file.resolve() and how == f"recorded dit_path, relative to {repo}"
    monkeypatch.chdir(repo)
    assert resolve_base_path(adapter, base, None) == (base_file.relative_to(repo), "recorded dit_path")
    with pytest.raises(FileNotFoundError, match="pass --base_dit_path"):
        resolve_base_path(adapter, {**old, "dit_path": "nope/model.pt"}, None)


def test_training_records_the_base_path_from_anywhere_and_its_size(tmp_path, monkeypatch):
    from cosmos_predict2.configs.model_config import model_config_dict
    from cosmos_predict2.training.model import Video2WorldModel

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt/base.pt").write_bytes(b"base weights")
    info = Video2WorldModel(model_config_dict(model_size="tiny", dit_path="ckpt/base.pt")).base_info()
    assert info["dit_path"] == "ckpt/base.pt" and info["dit_path_abs"] == str((tmp_path / "ckpt/base.pt").resolve())
    assert info["size"] == 12 and info["sha256"] == hashlib.sha256(b"base weights").hexdigest()
    assert str((tmp_path / "ckpt/base.pt").resolve()) in json.loads(sha256_cache_file().read_text())


def test_allow_base_mismatch_flag_reaches_lora_flags():
    from cosmos_predict2.inference.cli import build_parser

    assert build_parser(lora=True).parse_args(["--allow_base_mismatch"]).allow_base_mismatch
    assert not build_parser(lora=True).parse_args([]).allow_base_mismatch
    assert "--allow_base_mismatch" not in build_parser(lora=False).format_help()


# --- items 14, 15: values checked at config time -----------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_iter=abc", "override 'trainer.max_iter=abc': trainer.max_iter expects an integer (default 20), "
                                 "got 'abc'"),
        ("optimizer.lr=fast", "optimizer.lr expects a number"),
        ("dataloader_train.dataset.video_size=64", "dataloader_train.dataset.video_size expects a list of integers "
                                                   "(default [64, 64]), got 64 (int)"),
        ("dataloader_train.dataset.num_frames=10", "dataloader_train.dataset.num_frames=10: expected a frame count "
                                                   "4k+1"),
        ("dataloader_train.dataset.video_size=[64,60]", "dataloader_train.dataset.video_size=[64, 60]: expected "
                                                        "[H, W], two positive multiples of 16"),
        ("model.config.p_mean=x", "model.config.p_mean expects a number"),
        ("dataloader_train.dataset.on_invalid=ignore", "dataloader_train.dataset.on_invalid='ignore': expected one "
                                                       "of raise, skip"),
    ],
)
def test_wrong_values_are_refused_at_config_time_naming_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        compose_config(CONFIG, [TINY, override])
    assert message in str(e.value)


def test_model_config_types_are_checked_by_the_schema():
    from cosmos_predict2.configs.model_config import ModelConfigError, model_config_dict, parse_model_config

    with pytest.raises(ModelConfigError, match=r"model.config.lora_rank='8': expected an integer \(default 16\)"):
        parse_model_config(model_config_dict(lora_rank="8"))
    with pytest.raises(ModelConfigError, match="model.config.pipe_config.ema.rate"):
        parse_model_config(model_config_dict(pipe_config={"ema": {"rate": "high"}}))
    assert parse_model_config(model_config_dict(lora_alpha=16, lora_target_modules=["q_proj"])).lora_alpha == 16


def test_documented_dataset_keys_need_no_plus():
    """docs/troubleshooting.md: `dataloader_train.dataset.on_invalid=skip` (an argument of Dataset that the
    experiments leave at its default)."""
    cfg = compose_config(CONFIG, [TINY, "dataloader_train.dataset.on_invalid=skip", "job.name=2024"])
    assert cfg.dataloader_train.dataset.on_invalid == "skip"
    assert cfg.job.name == "2024"  # a number given for a string key is that string
    with pytest.raises(ConfigError, match="closest: dataloader_train.dataset.on_invalid"):
        compose_config(CONFIG, [TINY, "dataloader_train.dataset.on_invalidd=skip"])


# --- item 16: one error line from scripts.train ------------------------------------------------------------------


def test_user_errors_print_one_line_and_internal_errors_keep_their_traceback(capsys, monkeypatch):
    import scripts.train as train_script
    from cosmos_predict2.training.trainer import NonFiniteLossError

    def fails_with(error):
        def run(args):
            raise error

        return run

    monkeypatch.setattr(train_script, "_run", fails_with(ConfigError("trainer.max_iter expects an integer")))
    assert train_script.main(["--config", CONFIG]) == 2
    err = capsys.readouterr().err
    assert err == "error: trainer.max_iter expects an integer\n"
    monkeypatch.setattr(train_script, "_run", fails_with(NonFiniteLossError("3 non-finite losses in a row")))
    assert train_script.main(["--config", CONFIG]) == 1
    assert capsys.readouterr().err == "error: 3 non-finite losses in a row\n"
    monkeypatch.setattr(train_script, "_run", fails_with(FileNotFoundError("model.config.dit_path='x.pt'")))
    assert train_script.main(["--config", CONFIG]) == 1
    assert capsys.readouterr().err == "error: model.config.dit_path='x.pt'\n"
    monkeypatch.setenv("RANK", "1")  # other ranks: the same exit code, nothing printed
    assert train_script.main(["--config", CONFIG]) == 1 and capsys.readouterr().err == ""
    monkeypatch.delenv("RANK")
    with pytest.raises(FileNotFoundError):
        train_script.main(["--config", CONFIG, "--debug"])
    monkeypatch.setenv("COSMOS_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        train_script.main(["--config", CONFIG])
    monkeypatch.delenv("COSMOS_DEBUG")
    monkeypatch.setattr(train_script, "_run", fails_with(KeyError("internal")))
    with pytest.raises(KeyError):  # not a user error: the traceback stays
        train_script.main(["--config", CONFIG])


def test_train_reports_a_bad_override_in_one_line(capsys):
    from scripts.train import main

    assert main(["--config", CONFIG, "--dryrun", "--", TINY, "trainer.max_iter=abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: override 'trainer.max_iter=abc'") and err.count("\n") == 1
