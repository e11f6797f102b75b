"""Optimizer, learning-rate schedules and gradient clipping (docs/reference.md §6).

The `fusedadamw` group: AdamW, lr 1e-4, weight_decay 0.1, betas (0.9, 0.99), eps 1e-8, fused kernel on CUDA.
Master weights are fp32: LoRA adapters are created in fp32, and full fine-tuning keeps the trainable network in
fp32 and runs the forward under bf16 autocast (see training/model.py), so the optimizer only ever sees fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch

from cosmos_predict2.parallel.dtensor import global_value

log = logging.getLogger(__name__)


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    lr: float = 1e-4,
    weight_decay: float = 0.1,
    betas: Sequence[float] = (0.9, 0.99),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over `params` (only trainable ones are passed). fused=None: fused kernel when every parameter is on
    CUDA (it is not implemented for CPU tensors in every torch version, and the foreach path is bitwise stable)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the optimizer got no trainable parameter (check model.config.train_architecture)")
    bad = sorted({str(p.dtype) for p in params if p.dtype != torch.float32})
    if bad:
        raise ValueError(f"trainable parameters must be fp32 master weights, found {bad}")
    if fused is None:
        fused = all(p.is_cuda for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps, fused=fused)


class LambdaLinearScheduler:
    """Piecewise-linear lr factor over cycles laid end to end (docs/reference.md §6, `lambdalinear`).

    In cycle c at local step n' with warm-up W and length L:
        n' < W:  f = f_start + (f_max - f_start) * n' / W
        else:    f = f_min + (f_max - f_min) * (L - n') / (L - W)
    Past the last cycle the factor stays at that cycle's end value (the reference raised an IndexError).
    """

    def __init__(
        self,
        warm_up_steps: Sequence[int] = (1000,),
        cycle_lengths: Sequence[float] = (10_000_000_000_000,),
        f_start: Sequence[float] = (1e-6,),
        f_max: Sequence[float] = (1.0,),
        f_min: Sequence[float] = (1.0,),
        verbosity_interval: int = 0,
    ) -> None:
        lists = dict(warm_up_steps=warm_up_steps, cycle_lengths=cycle_lengths, f_start=f_start, f_max=f_max,
                     f_min=f_min)  # fmt: skip
        lengths = {k: len(v) for k, v in lists.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"scheduler lists must have one entry per cycle, got lengths {lengths}")
        for w, length in zip(warm_up_steps, cycle_lengths):
            if not 0 <= w <= length:
                raise ValueError(f"scheduler: warm_up_steps {w} must lie in [0, cycle length {length}]")
        self.warm_up_steps = [int(w) for w in warm_up_steps]
        self.cycle_lengths = [float(c) for c in cycle_lengths]
        self.f_start = [float(f) for f in f_start]
        self.f_max = [float(f) for f in f_max]
        self.f_min = [float(f) for f in f_min]
        self.verbosity_interval = verbosity_interval

    def _cycle(self, n: int) -> tuple[int, float]:
        start = 0.0
        for c, length in enumerate(self.cycle_lengths):
            if n < start + length:
                return c, n - start
            start += length
        last = len(self.cycle_lengths) - 1
        return last, self.cycle_lengths[last]  # clamp: stay at the end of the last cycle

    def __call__(self, n: int) -> float:
        c, local = self._cycle(n)
        w, length = self.warm_up_steps[c], self.cycle_lengths[c]
        if local < w:
            f = self.f_start[c] + (self.f_max[c] - self.f_start[c]) * local / w
        elif length == w:
            f = self.f_max[c]
        else:
            f = self.f_min[c] + (self.f_max[c] - self.f_min[c]) * (length - local) / (length - w)
        if self.verbosity_interval > 0 and n % self.verbosity_interval == 0:
            log.info(f"lr factor at step {n}: {f:.4g} (cycle {c})")
        return f


class ConstantScheduler:
    """lr factor 1 at every step (the `constant` scheduler group).

    The guide's experiments set `scheduler=dict(warm_up_steps=..., cycle_lengths=..., f_max=..., f_min=...)` for the
    default lambdalinear schedule; with `scheduler=constant` those keys merge into this node, so they are accepted
    and reported once as unused instead of failing with a TypeError."""

    def __init__(self, **unused: object) -> None:
        known = {"warm_up_steps", "cycle_lengths", "f_start", "f_max", "f_min", "verbosity_interval"}
        unknown = sorted(set(unused) - known)
        if unknown:
            raise TypeError(f"scheduler=constant: unknown keys {unknown}")
        if unused:
            log.info(f"scheduler=constant: the lambdalinear keys {sorted(unused)} of the experiment have no effect")

    def __call__(self, n: int) -> float:
        return 1.0


def build_lr_scheduler(optimizer: torch.optim.Optimizer, factor) -> torch.optim.lr_scheduler.LambdaLR:
    """lr(n) = base_lr * factor(n), n = optimizer steps taken. LambdaLR saves the factor object's fields in its
    state dict, which `torch.load(weights_only=True)` reads back (plain lists and numbers)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)


@torch.no_grad()
def clip_gradients(named_params: Sequence[tuple[str, torch.nn.Parameter]], max_norm: float) -> tuple[float, list[str]]:
    """Clip the global gradient norm to `max_norm` (<= 0: measure only).

    Non-finite gradient entries are zeroed first and the names of the affected parameters returned, so one bad
    element cannot turn the whole update into NaN (a NaN norm would make the clip coefficient NaN). Returns the
    norm before clipping (after zeroing) and the names of parameters that had non-finite gradients.
    """
    named = [(n, p) for n, p in named_params if p.grad is not None]
    if not named:
        return 0.0, []
    grads = [p.grad for _, p in named]
    # Under FSDP2 the gradients are DTensor shards and so is their norm; the clip needs the global value.
    norm = global_value(torch.nn.utils.get_total_norm(grads, norm_type=2.0))
    bad: list[str] = []
    if not torch.isfinite(norm):
        for name, p in named:
            if not torch.isfinite(p.grad).all():
                bad.append(name)
                torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        norm = global_value(torch.nn.utils.get_total_norm(grads, norm_type=2.0))
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_([p for _, p in named], max_norm, norm)
    return float(norm), bad


def lr_of(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


__all__ = [
    "ConstantScheduler",
    "LambdaLinearScheduler",
    "build_lr_scheduler",
    "build_optimizer",
    "clip_gradients",
    "lr_of",
]
