"""Group `callbacks`: `basic` = iteration speed, gradient clipping, progress bar, TensorBoard (built into monitors by
training/monitors.py; `grad_clip` is read by the train step)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

BASIC = dict(
    # `hit_thres`: iterations to skip before timing (compilation, cudnn autotune, first allocations);
    # `every_n`: print an iter_speed line every n iterations.
    iter_speed=dict(hit_thres=5, every_n=10),
    grad_clip=dict(clip_norm=1.0),
    # Progress bar, TensorBoard scalars (loss, lr, grad norm, s/it, GPU memory) every `every_n` iterations.
    progress_bar=dict(enabled=True),
    tensorboard=dict(enabled=True, every_n=1),
)


def register_callbacks() -> None:
    ConfigStore.instance().store(group="callbacks", package="trainer.callbacks", name="basic", node=BASIC)
