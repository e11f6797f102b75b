"""lambdalinear and constant schedules (docs/reference.md §6), including the clamp past the last cycle."""

from __future__ import annotations

import pytest
import torch

from cosmos_predict2.training.optim import ConstantScheduler, LambdaLinearScheduler, build_lr_scheduler


def reference_factor(n, W, L, fs, fM, fm):
    return fs + (fM - fs) * n / W if n < W else fm + (fM - fm) * (L - n) / (L - W)


def test_single_cycle_matches_spec_formula():
    s = LambdaLinearScheduler(warm_up_steps=[10], cycle_lengths=[100], f_start=[1e-6], f_max=[1.0], f_min=[0.1])
    for n in [0, 1, 5, 9, 10, 11, 50, 99]:
        assert s(n) == pytest.approx(reference_factor(n, 10, 100, 1e-6, 1.0, 0.1))


def test_reference_defaults():
    s = LambdaLinearScheduler()
    assert s(0) == pytest.approx(1e-6)
    assert s(500) == pytest.approx(1e-6 + (1 - 1e-6) * 0.5)
    assert s(1000) == pytest.approx(1.0) and s(10**9) == pytest.approx(1.0)


def test_guide_lora_schedule_and_clamp_past_the_end():
    s = LambdaLinearScheduler(warm_up_steps=[0], cycle_lengths=[2000], f_start=[1e-6], f_max=[0.6], f_min=[0.0])
    assert s(0) == pytest.approx(0.6)
    assert s(1000) == pytest.approx(0.3)
    assert s(1999) == pytest.approx(0.6 / 2000)
    assert s(2000) == 0.0 and s(5000) == 0.0  # the reference raised here


def test_cycles_laid_end_to_end():
    s = LambdaLinearScheduler(warm_up_steps=[2, 0], cycle_lengths=[4, 10], f_start=[0.0, 0.0], f_max=[1.0, 0.5],
                              f_min=[0.0, 0.1])  # fmt: skip
    assert [s(n) for n in range(4)] == pytest.approx([0.0, 0.5, 1.0, 0.5])
    assert s(4) == pytest.approx(0.5) and s(9) == pytest.approx(0.1 + 0.4 * 5 / 10)
    assert s(14) == pytest.approx(0.1) and s(100) == pytest.approx(0.1)


def test_invalid_lists_rejected():
    with pytest.raises(ValueError, match="one entry per cycle"):
        LambdaLinearScheduler(warm_up_steps=[1, 2], cycle_lengths=[10], f_start=[0], f_max=[1], f_min=[1])
    with pytest.raises(ValueError, match="warm_up_steps"):
        LambdaLinearScheduler(warm_up_steps=[20], cycle_lengths=[10], f_start=[0], f_max=[1], f_min=[1])


def test_lambda_lr_state_roundtrip(tmp_path):
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=0.5)
    factor = LambdaLinearScheduler(warm_up_steps=[4], cycle_lengths=[8], f_start=[0.0], f_max=[1.0], f_min=[0.0])
    sched = build_lr_scheduler(opt, factor)
    assert opt.param_groups[0]["lr"] == 0.0
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 0.75)
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    opt2 = torch.optim.AdamW([p], lr=0.5)
    sched2 = build_lr_scheduler(opt2, ConstantScheduler())
    sched2.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert sched2.last_epoch == 3 and ConstantScheduler()(123) == 1.0
