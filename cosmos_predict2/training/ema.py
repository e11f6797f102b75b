"""Power EMA of the trained weights (docs/reference.md §6).

beta(n) = (1 - 1/(n+1))^(gamma+1), gamma the largest real root of x^3 + 7x^2 + (16 - s^-2)x + (12 - s^-2)
for rate s (0.1 -> gamma = 6.9372); ema = beta * ema + (1 - beta) * net, beta(0) = 0.

Only *trainable* parameters are averaged: under LoRA the frozen base of an EMA copy would equal the base of the
network bit for bit, so keeping a second 2B/14B network (as the reference does) is pure waste; the EMA holds the
adapters only (fp32). Under full fine-tuning every parameter trains, so this is a full fp32 EMA.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from cosmos_predict2.io import check_keys
from cosmos_predict2.parallel.dtensor import full_state, like


def power_ema_gamma(rate: float) -> float:
    """Largest real root of x^3 + 7x^2 + (16 - s^-2) x + (12 - s^-2)."""
    if not 0 < rate < 1:
        raise ValueError(f"EMA rate must lie in (0, 1), got {rate} (model.config.pipe_config.ema.rate)")
    s2 = rate**-2
    roots = np.roots([1.0, 7.0, 16.0 - s2, 12.0 - s2])
    return float(max(r.real for r in roots if abs(r.imag) < 1e-9))


def power_ema_beta(iteration: int, gamma: float) -> float:
    return (1.0 - 1.0 / (iteration + 1)) ** (gamma + 1)


class PowerEMA:
    """fp32 shadow copies of the trainable parameters of `net`, keyed by parameter name."""

    def __init__(self, net: nn.Module, rate: float = 0.1) -> None:
        self.rate = rate
        self.gamma = power_ema_gamma(rate)
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().float().clone() for name, p in net.named_parameters() if p.requires_grad
        }
        if not self.shadow:
            raise ValueError("EMA: the network has no trainable parameter to average")

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.shadow.values())

    @torch.no_grad()
    def update(self, net: nn.Module, iteration: int) -> float:
        """Average in the current weights; `iteration` = optimizer steps taken before this one (0 for the first)."""
        beta = power_ema_beta(iteration, self.gamma)
        params = dict(net.named_parameters())
        ema = [self.shadow[n] for n in self.shadow]
        cur = [params[n].detach().float() for n in self.shadow]
        torch._foreach_lerp_(ema, cur, 1.0 - beta)  # ema + (1 - beta)(cur - ema) = beta ema + (1 - beta) cur
        return beta

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Whole tensors on the CPU (under FSDP2 the shadows are DTensor shards: every rank must call this)."""
        return full_state(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor], source: str = "EMA state") -> None:
        check_keys(self.shadow, state, source, what="the EMA of the trainable parameters", error=KeyError)
        for name, t in state.items():
            self.shadow[name].copy_(like(t.float(), self.shadow[name]))

    @contextlib.contextmanager
    def applied(self, net: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into `net` (e.g. for validation), restoring the trained ones after."""
        params = dict(net.named_parameters())
        backup = {n: params[n].detach().clone() for n in self.shadow}
        with torch.no_grad():
            for n, t in self.shadow.items():
                params[n].copy_(t)
        try:
            yield net
        finally:
            with torch.no_grad():
                for n, t in backup.items():
                    params[n].copy_(t)


__all__ = ["PowerEMA", "power_ema_beta", "power_ema_gamma"]
