"""Evaluation during training (issue 15) on the tiny model: held-out split, validation loss, held-out generations
scored against the real frames, eval.jsonl schedule across resumes, best checkpoint, early stopping, offline
re-evaluation (scripts.evaluate), PSNR/SSIM closed forms."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cosmos_predict2.configs import instantiate
from cosmos_predict2.configs.compose import compose_config
from cosmos_predict2.data.heldout import HeldoutSplit, heldout_stems, split_of, validation_clips
from cosmos_predict2.io import safe_load
from cosmos_predict2.training.evaluation import BaseReference, Evaluator, ValidationSettings, run_evaluation
from cosmos_predict2.training.metrics import psnr, ssim
from cosmos_predict2.training.trainer import job_dir_of, train
from tests.data_helpers import make_dataset

CONFIG = "cosmos_predict2/configs/base/config.py"
LORA = "predict2_video2world_lora_training_tiny_example"
STEMS = [f"clip{i:02d}" for i in range(10)]
FAST = ["trainer.validation.max_clips=2", "trainer.validation.num_sigmas=2", "trainer.validation.num_steps=2",
        "trainer.validation.guidance=0", "trainer.validation.num_generate=1"]  # fmt: skip


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("val_ds"), {s: 9 for s in STEMS}, 64, 64)


def make_cfg(dataset_dir: Path, root: Path, *overrides: str):
    return compose_config(CONFIG, [
        f"experiment={LORA}", f"dataloader_train.dataset.dataset_dir={dataset_dir}", f"job.root={root}",
        "trainer.callbacks.progress_bar.enabled=false", "trainer.callbacks.tensorboard.enabled=false",
        "dataloader_val=heldout", "dataloader_val.fraction=0.3", "trainer.run_validation=true",
        "trainer.validation_iter=2", "checkpoint.save_iter=2", "trainer.validation.generate_every=2", *FAST,
        *overrides,
    ])  # fmt: skip


def records(job: Path) -> list[dict]:
    return [json.loads(line) for line in (job / "eval.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(dataset_dir, tmp_path_factory):
    """One run of 8 iterations: validation at 2, 4, 6, 8; generations at 4 and 8."""
    cfg = make_cfg(dataset_dir, tmp_path_factory.mktemp("run"), "trainer.max_iter=8")
    train(cfg)
    return cfg, job_dir_of(cfg)


def test_heldout_split_is_stable_and_disjoint_from_training(dataset_dir, trained):
    held = heldout_stems(STEMS, 0.3)
    assert held == heldout_stems(list(reversed(STEMS)), 0.3)  # order does not matter
    assert held == heldout_stems(STEMS + ["new_clip"], 0.3) - {"new_clip"}  # adding a clip moves no other one
    assert 0 < len(held) < len(STEMS) and heldout_stems(["a", "b"], 1e-9)  # always one held out
    cfg, _ = trained
    from cosmos_predict2.training.data import build_train_loader

    loader, train_ds = build_train_loader(cfg.dataloader_train, seed=0, start_batch=0,
                                          heldout=split_of(cfg.dataloader_val))  # fmt: skip
    clips = validation_clips(cfg.dataloader_val, cfg.dataloader_train.dataset, train_ds)
    assert set(clips.stems) == held
    it = iter(loader)
    seen = {name for _ in range(12) for name in next(it)["video_name"]}
    assert seen == set(STEMS) - held  # every training clip, never a held-out one
    assert HeldoutSplit(0.3).val_part(train_ds.dataset).indices == clips.indices


def test_schedule_best_checkpoint_and_outputs(trained):
    cfg, job = trained
    rs = records(job)
    assert [r["iteration"] for r in rs] == [2, 4, 6, 8]
    assert ["val/psnr" in r for r in rs] == [False, True, False, True]
    assert all(r["checkpoint"] == f"iter_{r['iteration']:09d}.pt" for r in rs)
    assert len([k for k in rs[0] if k.startswith("val/loss_sigma_")]) == 2
    assert rs[-1]["val/loss"] < rs[0]["val/loss_base"]  # training lowers the held-out loss
    best = min(rs, key=lambda r: r["val/loss"])["checkpoint"]
    assert (job / "checkpoints" / "best_checkpoint.txt").read_text() == best + "\n"
    assert Path(rs[1]["paths"]["contact_sheet"]).is_file() and all(Path(p).is_file() for p in rs[1]["paths"]["videos"])
    assert (job / "evaluation" / "base" / "base.json").is_file()


def test_validation_loss_is_bit_identical_from_the_checkpoint(trained):
    cfg, job = trained
    model = instantiate(cfg.model)
    model.setup("cpu", seed=int(cfg.trainer.seed))
    model.init_ema()
    model.load_model_file_state(safe_load(job / "checkpoints" / "model" / "iter_000000006.pt"), "ckpt")
    clips = validation_clips(cfg.dataloader_val, cfg.dataloader_train.dataset,
                             instantiate(cfg.dataloader_train.dataset), 2)  # fmt: skip
    again = Evaluator(model, clips, ValidationSettings.from_config(cfg.trainer)).validation_loss()
    logged = records(job)[2]
    assert {k: logged[k] for k in again} == again  # exact equality, every sigma


def test_scripts_evaluate_reproduces_the_in_loop_numbers(trained, tmp_path):
    from scripts.evaluate import main

    _, job = trained
    assert main(["--job", str(job), "--checkpoints", "iter_000000004.pt", "iter_000000008.pt", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    offline = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    for logged, again in zip([r for r in records(job) if r["iteration"] in (4, 8)], offline):
        keys = [k for k in logged if k.startswith("val/")]
        assert {k: again[k] for k in keys} == {k: logged[k] for k in keys}
    assert "| iter_000000008.pt" in (tmp_path / "table.md").read_text() and (tmp_path / "metrics.png").is_file()


def test_resume_neither_repeats_nor_skips_an_evaluation(dataset_dir, trained, tmp_path):
    _, straight = trained
    cfg4 = make_cfg(dataset_dir, tmp_path, "trainer.max_iter=4")
    train(cfg4)
    job = job_dir_of(cfg4)
    # A crash during the evaluation of iteration 4, after its checkpoint: its line never made it to eval.jsonl.
    lines = (job / "eval.jsonl").read_text().splitlines()
    (job / "eval.jsonl").write_text(lines[0] + "\n")
    train(make_cfg(dataset_dir, tmp_path, "trainer.max_iter=8"))
    rs = records(job)
    assert [r["iteration"] for r in rs] == [2, 4, 6, 8]
    assert [r["val/loss"] for r in rs] == [r["val/loss"] for r in records(straight)]  # resume is bitwise


def test_early_stopping_after_patience_evaluations(dataset_dir, tmp_path):
    # lr 0: the weights (and so the validation loss) never change, so no evaluation after the first is better.
    cfg = make_cfg(dataset_dir, tmp_path, "trainer.max_iter=20", "optimizer.lr=0", "trainer.validation.patience=2",
                   "trainer.validation.generate_every=0", "trainer.validation_iter=1", "checkpoint.save_iter=10")
    result = train(cfg)
    job = job_dir_of(cfg)
    assert result.final_iteration == 3 and [r["iteration"] for r in records(job)] == [1, 2, 3]
    # The stop saves a checkpoint (iteration 3 is no multiple of save_iter); 1 and 2 have none to name.
    assert (job / "checkpoints" / "latest_checkpoint.txt").read_text() == "iter_000000003.pt\n"
    assert [r["checkpoint"] for r in records(job)] == [None, None, None]
    assert not (job / "checkpoints" / "best_checkpoint.txt").exists()


def test_a_crash_in_evaluation_keeps_the_checkpoint(dataset_dir, tmp_path, monkeypatch, caplog):
    def broken(self, base=False):
        raise RuntimeError("boom in validation")

    monkeypatch.setattr(Evaluator, "validation_loss", broken)
    cfg = make_cfg(dataset_dir, tmp_path, "trainer.max_iter=2", "trainer.validation.generate_every=0")
    result = train(cfg)
    job = job_dir_of(cfg)
    assert result.final_iteration == 2
    assert (job / "checkpoints" / "latest_checkpoint.txt").read_text() == "iter_000000002.pt\n"
    assert (job / "checkpoints" / "model" / "iter_000000002.pt").is_file()
    assert "boom in validation" in (job / "stdout.log").read_text() and not (job / "eval.jsonl").exists()


def test_an_adapter_that_changes_nothing_gives_zero_delta_and_a_warning(trained, tmp_path, caplog):
    cfg, _ = trained
    model = instantiate(cfg.model)
    model.setup("cpu", seed=0)  # lora_B starts at 0: base + adapter == base
    model.init_ema()
    assert all(float(p.detach().abs().max()) == 0 for n, p in model.net.named_parameters() if "lora_B" in n)
    clips = validation_clips(cfg.dataloader_val, cfg.dataloader_train.dataset,
                             instantiate(cfg.dataloader_train.dataset), 2)  # fmt: skip
    ev = Evaluator(model, clips, ValidationSettings.from_config(cfg.trainer))
    base = BaseReference(ev, tmp_path / "base", is_main=True)
    base.prepare(can_compute=True, generate=True)
    with caplog.at_level(logging.WARNING, logger="cosmos_predict2"):
        record, _ = run_evaluation(ev, 0, base, tmp_path, generate=True, is_main=True)
    assert record["val/delta_psnr"] == 0 and record["val/delta_ssim"] == 0 and record["val/delta_loss"] == 0
    assert "the adapter changes nothing" in caplog.text
    # A non-zero lora_B changes the generations: no warning.
    with torch.no_grad():
        for n, p in model.net.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        model.ema.shadow = {n: p.detach().clone() for n, p in model.net.named_parameters() if p.requires_grad}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cosmos_predict2"):
        record, _ = run_evaluation(ev, 1, base, tmp_path, generate=True, is_main=True)
    assert record["val/delta_psnr"] != 0 and "changes nothing" not in caplog.text


def test_psnr_and_ssim_closed_forms():
    a = np.full((2, 16, 16, 3), 100, np.uint8)
    b = np.full((2, 16, 16, 3), 110, np.uint8)
    assert psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert psnr(a, b) == pytest.approx(20 * math.log10(255 / 10), abs=1e-9)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-9)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, 32, 32, 3)).astype(np.uint8)
    noisy = np.clip(x.astype(int) + rng.integers(-40, 41, x.shape), 0, 255).astype(np.uint8)
    assert 0 < ssim(x, noisy) < 1 and ssim(x, 255 - x) < 0  # anti-correlated structure: negative
    mse = float(((x.astype(float) - noisy) ** 2).mean())
    assert psnr(x, noisy) == pytest.approx(10 * math.log10(255**2 / mse))


def test_validation_benchmark_smoke(tmp_path, monkeypatch):
    from benchmarks.bench_validation import main

    monkeypatch.setenv("OUT", str(tmp_path))
    result = main(["--model_size", "tiny"])
    assert 0 < result["evaluation_fraction_of_training"] and result["generation_s"] > 0
    assert json.loads((tmp_path / "bench_validation.json").read_text())["model"] == "tiny"



@pytest.mark.parametrize("overrides, message", [
    (["trainer.run_validation=true"], "needs a validation set: add dataloader_val=heldout"),
    (["dataloader_val=heldout", "dataloader_val.fraction=1.5"], "dataloader_val.fraction=1.5: expected a number"),
    (["dataloader_val=heldout", "trainer.validation.best_metric=val/lpips"], "best_metric='val/lpips'"),
    (["trainer.validation_iter=0"], "trainer.validation_iter=0: expected a positive integer"),
])  # fmt: skip
def test_validation_settings_are_checked_when_composing(overrides, message):
    from cosmos_predict2.configs.compose import ConfigError

    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        compose_config(CONFIG, [f"experiment={LORA}", *overrides])


def test_a_separate_validation_folder_holds_nothing_out(dataset_dir, tmp_path):
    other = make_dataset(tmp_path / "other", {"v0": 9, "v1": 9}, 64, 64)
    cfg = compose_config(CONFIG, [f"experiment={LORA}", f"dataloader_train.dataset.dataset_dir={dataset_dir}",
                                  f"dataloader_val.dataset_dir={other}", "trainer.run_validation=true"])  # fmt: skip
    assert split_of(cfg.dataloader_val) is None  # every training clip trains
    clips = validation_clips(cfg.dataloader_val, cfg.dataloader_train.dataset, None)
    assert clips.stems == ["v0", "v1"] and clips.videos[0] == other / "videos" / "v0.mp4"


def test_training_with_loader_workers_and_validation(dataset_dir, tmp_path):
    """Worker processes with validation on: the main process decodes clips before the loader forks (PyAV 18's
    threaded swscale hung every worker then); the loader's timeout turns a hang into a failure."""
    cfg = make_cfg(dataset_dir, tmp_path, "trainer.max_iter=2", "dataloader_train.num_workers=2",
                   "+dataloader_train.timeout=60")  # fmt: skip
    train(cfg)
    assert [r["iteration"] for r in records(job_dir_of(cfg))] == [2]
