"""What watches a training run: the progress bar, `iter_speed` lines, log lines and TensorBoard scalars.

Monitors are built from the guide's `trainer.callbacks` group through `MONITORS`, a registry of name -> factory:
`trainer.callbacks.iter_speed=dict(hit_thres=5, every_n=10)` builds `IterSpeed(hit_thres=5, every_n=10)`. A monitor
sees every step's `StepStats` (`on_step`), is told after each iteration's checkpoint save (`after_step`), may ask
the loop to stop (`should_stop`, e.g. early stopping) and is closed when the run ends; one more monitor is one more
registry entry, not a change to the loop. `validation` (training/evaluation.py) is built on every rank when
`trainer.run_validation` is true. Entries that are settings of the step itself (`grad_clip`) are
read by the trainer and build no monitor.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("cosmos_predict2.training")


@dataclass
class StepStats:
    """One training iteration, as the monitors see it."""

    iteration: int  # optimizer steps done after this iteration (1 for the first)
    max_iter: int
    loss: float
    lr: float
    grad_norm: float  # NaN for a skipped (non-finite) step
    seconds: float
    skipped: bool = False
    gpu_memory_gib: float | None = None


@dataclass
class MonitorContext:
    """What a monitor factory may need from the run."""

    job_dir: Path
    is_main: bool
    start_iteration: int
    max_iter: int
    logging_iter: int
    run: Any = None  # the trainer's Run (model, dataset), for monitors that evaluate the model
    cfg: Any = None  # the composed config


class Monitor:
    def on_step(self, stats: StepStats) -> None:
        pass

    def after_step(self, iteration: int, saved: bool) -> None:
        """After iteration `iteration` and its checkpoint save (saved: whether one was written)."""

    def should_stop(self) -> bool:
        """True: the loop saves (if it has not) and ends the run normally. Must agree on every rank."""
        return False

    def close(self) -> None:
        pass


class IterSpeed(Monitor):
    """The guide's `iter_speed` lines: mean seconds per iteration over the last `every_n` iterations, after
    skipping the first `hit_thres` (warm-up, allocator growth, cudnn autotuning)."""

    def __init__(self, hit_thres: int = 5, every_n: int = 10) -> None:
        self.hit_thres, self.every_n = int(hit_thres), max(int(every_n), 1)
        self.seen, self.window = 0, []

    def on_step(self, stats: StepStats) -> None:
        self.seen += 1
        if self.seen <= self.hit_thres:
            return
        self.window.append(stats.seconds)
        if len(self.window) >= self.every_n:
            speed = sum(self.window) / len(self.window)
            log.info(f"{stats.iteration} : iter_speed {speed:.2f} seconds per iteration | Loss: {stats.loss:.4f}")
            self.window = []


class LogLines(Monitor):
    """One line in stdout.log every `every_n` iterations (`trainer.logging_iter`)."""

    def __init__(self, every_n: int) -> None:
        self.every_n = max(int(every_n), 1)

    def on_step(self, s: StepStats) -> None:
        if s.iteration % self.every_n == 0:
            log.info(f"iteration {s.iteration}/{s.max_iter} | loss {s.loss:.4f} | lr {s.lr:.4g} | "
                     f"grad_norm {s.grad_norm:.4f} | {s.seconds:.2f} s/it")  # fmt: skip


class ProgressBar(Monitor):
    def __init__(self, start: int, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=start, desc="train", unit="it", dynamic_ncols=True, file=sys.stderr)

    def on_step(self, s: StepStats) -> None:
        self.bar.set_postfix(loss=f"{s.loss:.4f}", lr=f"{s.lr:.3g}", s_it=f"{s.seconds:.2f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class TensorBoardScalars(Monitor):
    """train/loss, lr, grad_norm, s_per_it and gpu_memory_gib every `every_n` iterations."""

    def __init__(self, log_dir: Path, every_n: int = 1) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))
        self.every_n = max(int(every_n), 1)

    def on_step(self, s: StepStats) -> None:
        if s.iteration % self.every_n:
            return
        scalars = {"loss": s.loss, "lr": s.lr, "grad_norm": s.grad_norm, "s_per_it": s.seconds,
                   "gpu_memory_gib": s.gpu_memory_gib}  # fmt: skip
        for name, value in scalars.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(f"train/{name}", value, s.iteration)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _enabled(options: dict) -> bool:
    return bool(options.pop("enabled", True))


def _iter_speed(ctx: MonitorContext, options: dict) -> Monitor | None:
    return IterSpeed(**options) if ctx.is_main and _enabled(options) else None


def _progress_bar(ctx: MonitorContext, options: dict) -> Monitor | None:
    return ProgressBar(ctx.start_iteration, ctx.max_iter) if ctx.is_main and _enabled(options) else None


def _tensorboard(ctx: MonitorContext, options: dict) -> Monitor | None:
    if not (ctx.is_main and _enabled(options)):
        return None
    return TensorBoardScalars(ctx.job_dir / "tensorboard", **options)


def _validation(ctx: MonitorContext, options: dict) -> Monitor | None:
    if not _enabled(options):
        return None
    from cosmos_predict2.training.evaluation import build_validation_monitor

    return build_validation_monitor(ctx, options)  # every rank: all of them take part in the forwards


MonitorFactory = Callable[[MonitorContext, dict], "Monitor | None"]
MONITORS: dict[str, MonitorFactory] = {
    "iter_speed": _iter_speed,
    "progress_bar": _progress_bar,
    "tensorboard": _tensorboard,
    "validation": _validation,
}
STEP_SETTINGS = ("grad_clip",)  # callbacks entries the train step reads itself


def build_monitors(callbacks: dict[str, Any], ctx: MonitorContext) -> list[Monitor]:
    """The monitors of `trainer.callbacks`, plus the log lines of `trainer.logging_iter` (main rank only)."""
    monitors: list[Monitor] = [LogLines(ctx.logging_iter)] if ctx.is_main else []
    if ctx.cfg is not None and ctx.cfg.trainer.get("run_validation", False):
        callbacks = {**callbacks, "validation": callbacks.get("validation") or {}}
    for name, options in callbacks.items():
        if name in STEP_SETTINGS:
            continue
        if name not in MONITORS:
            known = sorted([*MONITORS, *STEP_SETTINGS])
            raise ValueError(f"trainer.callbacks.{name}: unknown callback; known: {known}")
        try:
            monitor = MONITORS[name](ctx, dict(options or {}))
        except TypeError as e:
            raise ValueError(f"trainer.callbacks.{name}: {e}") from e
        if monitor is not None:
            monitors.append(monitor)
    return monitors


__all__ = ["MONITORS", "IterSpeed", "Monitor", "MonitorContext", "StepStats", "build_monitors"]
