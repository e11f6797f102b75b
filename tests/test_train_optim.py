"""Optimizer settings and gradient clipping with non-finite gradients."""

from __future__ import annotations

import pytest
import torch

from cosmos_predict2.training.optim import build_optimizer, clip_gradients


def test_fusedadamw_settings_and_fp32_master_weights():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([p], lr=2**-10)
    g = opt.param_groups[0]
    assert (g["lr"], g["weight_decay"], g["betas"], g["eps"]) == (2**-10, 0.1, (0.9, 0.99), 1e-8)
    assert g["fused"] is False  # CPU parameters: the fused kernel is used on CUDA only
    with pytest.raises(ValueError, match="fp32 master weights"):
        build_optimizer([torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))])
    with pytest.raises(ValueError, match="no trainable parameter"):
        build_optimizer([torch.nn.Parameter(torch.zeros(2), requires_grad=False)])


def test_clip_to_unit_norm():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])
    norm, bad = clip_gradients([("a", a), ("b", b)], 1.0)
    assert norm == pytest.approx(5.0) and bad == []
    assert torch.cat([a.grad, b.grad]).norm() == pytest.approx(1.0, rel=1e-5)


def test_nonfinite_gradients_are_zeroed_and_reported():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([float("nan"), 0.5]), torch.tensor([0.0, 0.0])
    norm, bad = clip_gradients([("a", a), ("b", b)], 1.0)
    assert bad == ["a"] and norm == pytest.approx(0.5)
    assert torch.equal(a.grad, torch.tensor([0.0, 0.5]))
