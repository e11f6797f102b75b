"""Power EMA (docs/reference.md §6) and the LoRA-only EMA."""

from __future__ import annotations

import pytest
import torch

from cosmos_predict2.lora import LoraSpec, add_lora
from cosmos_predict2.networks import build_net
from cosmos_predict2.training.ema import PowerEMA, power_ema_beta, power_ema_gamma


def test_gamma_and_beta_match_spec():
    gamma = power_ema_gamma(0.1)
    assert gamma == pytest.approx(6.9372, abs=1e-4)
    x = gamma
    assert x**3 + 7 * x**2 + (16 - 100) * x + (12 - 100) == pytest.approx(0.0, abs=1e-8)
    assert power_ema_beta(0, gamma) == 0.0
    assert power_ema_beta(10, gamma) == pytest.approx(0.469, abs=1e-3)
    assert power_ema_beta(100, gamma) == pytest.approx(0.924, abs=1e-3)
    assert power_ema_beta(1000, gamma) == pytest.approx(0.9921, abs=1e-4)
    with pytest.raises(ValueError, match="rate"):
        power_ema_gamma(1.5)


def test_update_is_the_power_average():
    net = torch.nn.Linear(3, 2, bias=False)
    ema = PowerEMA(net, 0.1)
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    assert ema.update(net, 0) == 0.0
    assert torch.equal(ema.shadow["weight"], net.weight.detach())  # beta(0) = 0: ema = net
    with torch.no_grad():
        net.weight.copy_(w0)
    beta = ema.update(net, 10)
    expected = beta * (w0 + 1.0) + (1 - beta) * w0
    torch.testing.assert_close(ema.shadow["weight"], expected)


def test_lora_ema_keeps_only_adapters_and_applies_temporarily():
    net = build_net("tiny")
    add_lora(net, LoraSpec(rank=4, alpha=4))
    ema = PowerEMA(net, 0.1)
    assert set(ema.shadow) == {n for n, p in net.named_parameters() if p.requires_grad}
    assert all(".lora_" in n for n in ema.shadow)
    assert ema.num_parameters() == sum(p.numel() for p in net.parameters() if p.requires_grad)
    name = next(iter(ema.shadow))
    ema.shadow[name].fill_(3.0)
    before = dict(net.named_parameters())[name].detach().clone()
    with ema.applied(net):
        assert torch.all(dict(net.named_parameters())[name] == 3.0)
    assert torch.equal(dict(net.named_parameters())[name], before)
    with pytest.raises(KeyError, match="missing"):
        ema.load_state_dict({}, "x.pt")
