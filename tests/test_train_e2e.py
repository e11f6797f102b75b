"""End-to-end tiny training runs on CPU with the real Dataset and the (tiny, random) Wan VAE."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from cosmos_predict2.configs import instantiate
from cosmos_predict2.configs.compose import compose_config
from cosmos_predict2.lora import LoraConfigError
from cosmos_predict2.training.checkpointer import CheckpointError
from cosmos_predict2.training.trainer import NonFiniteLossError, job_dir_of, train
from tests.data_helpers import make_dataset

CONFIG = "cosmos_predict2/configs/base/config.py"
LORA = "predict2_video2world_lora_training_tiny_example"
FULL = "predict2_video2world_training_tiny_example"


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny_ds"), {"a": 12, "b": 10, "c": 9, "d": 11}, 64, 64)


def make_cfg(dataset_dir: Path, root: Path, experiment: str = LORA, *overrides: str):
    return compose_config(CONFIG, [
        f"experiment={experiment}", f"dataloader_train.dataset.dataset_dir={dataset_dir}", f"job.root={root}",
        "trainer.callbacks.progress_bar.enabled=false", "trainer.callbacks.tensorboard.enabled=false", *overrides,
    ])  # fmt: skip


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def build_model(cfg):
    model = instantiate(cfg.model)
    model.setup("cpu", seed=int(cfg.trainer.seed))
    return model


def eval_loss(model, batches) -> float:
    """Mean loss over fixed batches and fixed step seeds (the step draws sigma/noise from (seed, iteration))."""
    with torch.no_grad():
        return sum(float(model.training_step(b, 10_000 + i)[0]) for i, b in enumerate(batches)) / len(batches)


def fixed_batches(cfg, n: int = 6):
    from cosmos_predict2.training.data import build_train_loader

    loader, _ = build_train_loader(cfg.dataloader_train, seed=123, start_batch=0)
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_lora_run_learns_keeps_base_and_writes_guide_layout(dataset_dir, tmp_path):
    cfg = make_cfg(dataset_dir, tmp_path, LORA, "trainer.max_iter=40", "checkpoint.save_iter=15",
                   "trainer.callbacks.tensorboard.enabled=true")  # fmt: skip
    initial = build_model(cfg)
    base_before = {k: v.clone() for k, v in initial.net.state_dict().items() if ".lora_" not in k}
    batches = fixed_batches(cfg)
    loss_before = eval_loss(initial, batches)

    result = train(cfg)
    assert result.final_iteration == 40 and all(math.isfinite(x) for x in result.losses)

    job = job_dir_of(cfg)
    ck = job / "checkpoints"
    assert (ck / "latest_checkpoint.txt").read_text() == "iter_000000040.pt\n"
    for part in ("model", "optim", "scheduler", "trainer"):
        assert sorted(p.name for p in (ck / part).iterdir()) == ["iter_000000015.pt", "iter_000000030.pt",
                                                                 "iter_000000040.pt"]  # fmt: skip
    assert (job / "config.yaml").is_file() and "Done with training." in (job / "stdout.log").read_text()
    log_text = (job / "stdout.log").read_text()
    assert "Adding LoRA adapters: rank=8, alpha=8, targets=['q_proj'" in log_text
    # rank 8 on the tiny net (2 blocks, width 64, MLP 256, text 32): per block self-attn 4 x (8*64 + 64*8),
    # cross-attn q/o 2 x 1024 + k/v 2 x (8*32 + 64*8), MLP 2 x (8*64 + 256*8) = 12,800.
    assert "Trainable parameters: 25,600" in log_text and "iter_speed" in log_text
    assert any((job / "tensorboard").iterdir())

    state = load(ck / "model" / "iter_000000040.pt")
    assert state["lora_config"]["rank"] == 8 and state["lora_config"]["base"]["model_size"] == "tiny"
    assert all(".lora_" in k for k in state if k != "lora_config")  # adapters only: small, self-describing
    assert any(k.startswith("net_ema.") for k in state)

    # The trained adapters on a fresh copy of the same random base: base identical, adapters changed, lower loss.
    trained = build_model(cfg)
    for k, v in trained.net.state_dict().items():
        if ".lora_" not in k:
            assert torch.equal(v, base_before[k]), k
    weights = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    assert any(not torch.equal(weights[k], initial.net.state_dict()[k]) for k in weights)
    trained.net.load_state_dict(weights, strict=False)
    loss_after = eval_loss(trained, batches)
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)


def test_resume_is_bitwise_identical(dataset_dir, tmp_path):
    straight = train(make_cfg(dataset_dir, tmp_path / "a", LORA, "trainer.max_iter=12", "checkpoint.save_iter=6"))
    first = train(make_cfg(dataset_dir, tmp_path / "b", LORA, "trainer.max_iter=6", "checkpoint.save_iter=6"))
    second = train(make_cfg(dataset_dir, tmp_path / "b", LORA, "trainer.max_iter=12", "checkpoint.save_iter=6"))
    assert second.start_iteration == 6
    assert first.losses + second.losses == straight.losses
    for part in ("model", "optim"):
        a = load(straight.job_dir / "checkpoints" / part / "iter_000000012.pt")
        b = load(second.job_dir / "checkpoints" / part / "iter_000000012.pt")
        flat_a, flat_b = _flatten(a), _flatten(b)
        assert flat_a.keys() == flat_b.keys()
        for k in flat_a:
            if isinstance(flat_a[k], torch.Tensor):
                assert torch.equal(flat_a[k], flat_b[k]), (part, k)


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items() if isinstance(d, dict) else enumerate(d):
        if isinstance(v, (dict, list)):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_resume_refuses_a_different_lora_config(dataset_dir, tmp_path):
    train(make_cfg(dataset_dir, tmp_path, LORA, "trainer.max_iter=2", "checkpoint.save_iter=2"))
    with pytest.raises(LoraConfigError, match="rank=8.*rank=4"):
        train(make_cfg(dataset_dir, tmp_path, LORA, "trainer.max_iter=4", "model.config.lora_rank=4"))
    same_job = ["job.group=video2world_lora", "trainer.max_iter=4"]
    with pytest.raises(CheckpointError, match="LoRA adapter checkpoint, but this run is full fine-tuning"):
        train(make_cfg(dataset_dir, tmp_path, FULL, *same_job))


def test_full_finetuning_trains_everything_and_saves_reference_layout(dataset_dir, tmp_path):
    cfg = make_cfg(dataset_dir, tmp_path, FULL, "trainer.max_iter=3", "checkpoint.save_iter=3")
    result = train(cfg)
    state = load(result.job_dir / "checkpoints" / "model" / "iter_000000003.pt")
    assert "lora_config" not in state
    net_keys = {k for k in state if k.startswith("net.")}
    assert "net.blocks.0.self_attn.q_proj.weight" in net_keys and "net.final_layer.linear.weight" in net_keys
    assert {k.replace("net_ema.", "net.", 1) for k in state if k.startswith("net_ema.")} == net_keys
    assert all(v.dtype == torch.float32 for v in state.values())
    # the reference-format file loads as base weights of a new run (e.g. LoRA on top of the tuned model)
    lora_on_top = make_cfg(dataset_dir, tmp_path / "lora", LORA, "trainer.max_iter=1",
                           f"model.config.dit_path={result.job_dir / 'checkpoints/model/iter_000000003.pt'}")
    assert train(lora_on_top).final_iteration == 1


def test_lora_targets_matching_nothing_fail_before_any_work(dataset_dir, tmp_path):
    cfg = make_cfg(dataset_dir, tmp_path, LORA, "model.config.lora_target_modules=to_q,to_k")
    with pytest.raises(LoraConfigError, match=r"\['to_q', 'to_k'\] match no Linear"):
        train(cfg)
    assert not (job_dir_of(cfg) / "checkpoints").exists()


def test_missing_base_checkpoint_is_a_clear_error(dataset_dir, tmp_path):
    cfg = make_cfg(dataset_dir, tmp_path, LORA, "model.config.dit_path=/nonexistent/model.pt")
    with pytest.raises(FileNotFoundError, match="model.config.dit_path"):
        train(cfg)


def test_text_width_mismatch_names_the_setting(dataset_dir, tmp_path):
    cfg = make_cfg(dataset_dir, tmp_path, LORA, "+model.config.net.crossattn_emb_channels=64", "trainer.max_iter=1")
    with pytest.raises(ValueError, match="crossattn_emb_channels"):
        train(cfg)


def test_nonfinite_losses_are_skipped_then_stop_the_run(dataset_dir, tmp_path, monkeypatch, caplog):
    from cosmos_predict2.training.model import Video2WorldModel

    real_step = Video2WorldModel.training_step
    bad = {2, 5, 6, 7}

    def step(self, batch, iteration):
        loss, info = real_step(self, batch, iteration)
        return (loss * float("nan") if iteration in bad else loss), info

    monkeypatch.setattr(Video2WorldModel, "training_step", step)
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row .*iteration 8"):
        train(make_cfg(dataset_dir, tmp_path, LORA, "trainer.max_iter=10", "checkpoint.save_iter=4"))
    log_text = (job_dir_of(make_cfg(dataset_dir, tmp_path)) / "stdout.log").read_text()
    assert "Non-finite loss (nan) at iteration 3: skipping this update" in log_text
    assert (job_dir_of(make_cfg(dataset_dir, tmp_path)) / "checkpoints" / "model" / "iter_000000004.pt").is_file()


def test_cached_latents_are_used_without_the_vae(dataset_dir, tmp_path, monkeypatch):
    import shutil

    from cosmos_predict2.data import build_latent_cache
    from cosmos_predict2.tokenizers import WanVAETokenizer, tiny_vae_config
    from cosmos_predict2.training.model import Video2WorldModel

    ds = Path(shutil.copytree(dataset_dir, tmp_path / "ds"))
    build_latent_cache(ds, WanVAETokenizer.from_config(tiny_vae_config(), seed=0, device="cpu"), 9, (64, 64))

    def no_vae(self):
        raise AssertionError("the VAE must not be loaded when latents are cached")

    monkeypatch.setattr(Video2WorldModel, "tokenizer", property(no_vae))
    cfg = make_cfg(ds, tmp_path, LORA, "trainer.max_iter=2", "dataloader_train.dataset.use_cached_latents=true")
    assert train(cfg).final_iteration == 2


# --- faults (issue 13); the whole campaign (kill -9, two processes, a real SIGTERM) is tests/test_faults.py --------


def _ck(cfg) -> Path:
    return job_dir_of(cfg) / "checkpoints"


def test_diverging_lr_saves_nothing_during_the_streak_and_says_how_to_go_on(dataset_dir, tmp_path):
    cfg = make_cfg(dataset_dir, tmp_path, LORA, "trainer.max_iter=6", "checkpoint.save_iter=1", "optimizer.lr=1e6")
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg)
    message = str(e.value)
    # lr=1e6: iterations 1-2 finite, NaN from 3 on (the weights of checkpoint 2 give it): latest goes back to 1
    assert "first at iteration 3, last at iteration 5" in message
    assert "now names iter_000000001.pt, the last checkpoint whose weights gave a finite loss" in message
    assert "To go on with a 10x lower learning rate, run `" in message and "optimizer.lr=1e+05`" in message
    ck = _ck(cfg)
    assert (ck / "latest_checkpoint.txt").read_text() == "iter_000000001.pt\n"
    assert sorted(p.name for p in (ck / "model").iterdir()) == ["iter_000000001.pt", "iter_000000002.pt.diverged"]
    sane = train(make_cfg(dataset_dir, tmp_path, LORA, "trainer.max_iter=4", "checkpoint.save_iter=1"))
    assert sane.start_iteration == 1 and all(math.isfinite(x) for x in sane.losses)
    assert "optimizer.lr=0.00390625 (the checkpoint was trained with 1e+06): going on with 0.00390625" in (
        job_dir_of(cfg) / "stdout.log").read_text()  # fmt: skip


def test_a_second_run_in_a_locked_job_folder_is_refused_and_writes_nothing(dataset_dir, tmp_path):
    import os

    from cosmos_predict2.training.lock import JobLock, JobLockedError

    cfg = make_cfg(dataset_dir, tmp_path, LORA, "trainer.max_iter=1")
    lock = JobLock(job_dir_of(cfg)).acquire()  # "another run" (this process, through another open file)
    try:
        with pytest.raises(JobLockedError, match=rf"is in use by another training run \(pid {os.getpid()} on "):
            train(cfg)
    finally:
        lock.release()
    assert sorted(p.name for p in job_dir_of(cfg).iterdir()) == ["job.lock"]  # no config.yaml, log or checkpoint
    assert train(cfg).final_iteration == 1


def test_restart_without_latest_resumes_cleans_temporaries_and_overwrites_nothing(dataset_dir, tmp_path):
    cfg = make_cfg(dataset_dir, tmp_path, LORA, "trainer.max_iter=4", "checkpoint.save_iter=2")
    train(cfg)
    ck = _ck(cfg)
    (ck / "latest_checkpoint.txt").unlink()
    before = {p: p.read_bytes() for p in ck.rglob("iter_*.pt")}
    left = [ck / "model" / ".iter_000000006.pt.tmp-999999", ck / ".latest_checkpoint.txt.tmp-999999"]
    for p in left:
        p.write_bytes(b"half a save")
    (ck / "model" / ".keep-me").write_text("not the atomic writer's")
    result = train(make_cfg(dataset_dir, tmp_path, LORA, "trainer.max_iter=6", "checkpoint.save_iter=2"))
    assert result.start_iteration == 4
    assert all(p.read_bytes() == data for p, data in before.items())
    assert not any(p.exists() for p in left) and (ck / "model" / ".keep-me").exists()
    log_text = (job_dir_of(cfg) / "stdout.log").read_text()
    assert "is missing: resuming from the newest complete checkpoint set, iter_000000004.pt" in log_text
    assert "Removed 2 temporary file(s) left by interrupted saves" in log_text


def test_damaged_checkpoints_fall_back_then_refuse_without_touching_config(dataset_dir, tmp_path):
    cfg = make_cfg(dataset_dir, tmp_path, LORA, "trainer.max_iter=4", "checkpoint.save_iter=2")
    train(cfg)
    ck, config = _ck(cfg), job_dir_of(cfg) / "config.yaml"
    optim = ck / "optim" / "iter_000000004.pt"
    optim.write_bytes(optim.read_bytes()[:200])
    assert train(cfg).start_iteration == 2  # fell back; iterations 3-4 trained again (and iter 4 rewritten)
    log_text = (job_dir_of(cfg) / "stdout.log").read_text()
    assert f"Cannot resume from iter_000000004.pt: optim checkpoint {optim} cannot be read" in log_text
    assert "Falling back to the previous complete set, iter_000000002.pt." in log_text
    for it in (2, 4):
        (ck / "trainer" / f"iter_{it:09d}.pt").write_bytes(b"")
    config_before = config.read_bytes()
    with pytest.raises(CheckpointError, match="no complete checkpoint set to resume from"):
        train(make_cfg(dataset_dir, tmp_path, LORA, "trainer.max_iter=6", "checkpoint.save_iter=2"))
    assert config.read_bytes() == config_before  # a failed resume leaves the job's config.yaml alone


def test_sigterm_saves_the_iteration_reached_and_exits_143(dataset_dir, tmp_path, monkeypatch):
    import os
    import signal

    from cosmos_predict2.training.model import Video2WorldModel
    from cosmos_predict2.training.trainer import TrainingInterrupted

    real_step = Video2WorldModel.training_step

    def step(self, batch, iteration):
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step: the step finishes, then the save
        return real_step(self, batch, iteration)

    monkeypatch.setattr(Video2WorldModel, "training_step", step)
    cfg = make_cfg(dataset_dir, tmp_path, LORA, "trainer.max_iter=6", "checkpoint.save_iter=100")
    with pytest.raises(TrainingInterrupted, match="SIGTERM: stopped at iteration 3 and saved checkpoint "
                                                  "iter_000000003.pt") as e:  # fmt: skip
        train(cfg)
    assert e.value.code == 143
    assert (_ck(cfg) / "latest_checkpoint.txt").read_text() == "iter_000000003.pt\n"
    monkeypatch.undo()
    assert train(cfg).start_iteration == 3
