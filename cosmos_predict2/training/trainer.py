"""The training loop: `build(cfg)` makes every part of the run, `train(cfg)` loops over `train_step`.

    train(cfg) -> TrainResult

Order of work in `build` (why): config/LoRA errors first (meta device, nothing allocated) -> weights ->
parallelisation (cosmos_predict2.parallel, from outside the network) -> EMA/optimizer/scheduler -> resume -> data.
The loop then reads: next batch -> `train_step` -> monitors -> checkpoint. One process works without
torch.distributed; under torchrun every rank runs the same loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cosmos_predict2 import parallel
from cosmos_predict2.configs.lazy import instantiate
from cosmos_predict2.io import atomic_write_text, safe_load
from cosmos_predict2.parallel import ProcessInfo, init_distributed
from cosmos_predict2.training.checkpointer import (
    Checkpointer,
    ModelPart,
    OptimizerPart,
    SchedulerPart,
    TrainerStatePart,
)
from cosmos_predict2.training.data import build_train_loader
from cosmos_predict2.training.monitors import Monitor, MonitorContext, StepStats, build_monitors
from cosmos_predict2.training.optim import build_lr_scheduler, clip_gradients, lr_of

log = logging.getLogger("cosmos_predict2.training")


class NonFiniteLossError(RuntimeError):
    """Too many NaN/inf losses in a row: the run is diverging or the data is broken."""


@dataclass
class TrainResult:
    job_dir: Path
    start_iteration: int
    final_iteration: int
    losses: list[float]  # per iteration of this process's run (NaN for skipped steps)


@dataclass
class Run:
    """Everything `build` makes; the loop only reads it (and `state`, which the checkpoints carry)."""

    proc: ProcessInfo
    job_dir: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    checkpointer: Checkpointer
    loader: torch.utils.data.DataLoader
    max_iter: int
    clip_norm: float
    max_nonfinite: int
    save_final: bool
    state: dict = field(default_factory=lambda: {"iteration": 0, "nonfinite_in_a_row": 0})

    @property
    def parts(self) -> dict:
        return {"model": ModelPart(self.model), "optim": OptimizerPart(self.model.net, self.optimizer),
                "scheduler": SchedulerPart(self.scheduler), "trainer": TrainerStatePart(self.state)}  # fmt: skip

    @property
    def named_trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.model.net.named_parameters() if p.requires_grad]


def job_dir_of(cfg: DictConfig) -> Path:
    job = cfg.job
    return Path(job.root) / job.project / job.group / job.name


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _callbacks(cfg: DictConfig) -> dict:
    return dict(OmegaConf.to_container(cfg.trainer.get("callbacks", {}) or {}, resolve=True))


def build(cfg: DictConfig, proc: ProcessInfo, job_dir: Path) -> Run:
    """Model, parallelism, EMA, optimizer, scheduler, checkpoints (resumed when present) and the data stream."""
    seed = int(cfg.trainer.seed)
    seed_everything(seed + proc.rank)
    cp_size = int(cfg.model_parallel.get("context_parallel_size", 1))
    if cp_size > 1 and proc.world_size == 1:
        log.warning(f"model_parallel.context_parallel_size={cp_size} needs {cp_size} processes (torchrun); "
                    "one process trains without context parallelism")  # fmt: skip
        cp_size = 1
    # The ranks of one context-parallel group share a sample, so they must also draw the same sigma, noise and
    # text dropout: the training step is seeded with the data-parallel rank, not the global one.
    dp_rank, dp_size = parallel.dp_rank_and_size(cp_size)
    model = instantiate(cfg.model)
    model.setup(proc.device, seed=seed, rank=dp_rank)  # raises LoRA/config errors before any weight is read
    model.net = parallel.parallelize_net(model.net, fsdp_shard_size=int(model.config.fsdp_shard_size),
                                         context_parallel_size=cp_size)  # fmt: skip
    model.init_ema()
    params = [p for p in model.net.parameters() if p.requires_grad]
    optimizer = instantiate(cfg.optimizer, params=params)
    scheduler = build_lr_scheduler(optimizer, instantiate(cfg.scheduler))
    ckpt_cfg = cfg.checkpoint
    run = Run(proc, job_dir, model, optimizer, scheduler, Checkpointer(job_dir, int(ckpt_cfg.save_iter), proc.is_main),
              loader=None, max_iter=int(cfg.trainer.max_iter),
              clip_norm=float((_callbacks(cfg).get("grad_clip") or {}).get("clip_norm", 1.0)),
              max_nonfinite=int(cfg.trainer.get("max_consecutive_nonfinite", 3)),
              save_final=bool(ckpt_cfg.get("save_final", True)))  # fmt: skip
    _resume(run, ckpt_cfg)
    start = run.state["iteration"]
    c = model.config  # cached latents must come from the VAE training would use (checked by sha256, no load)
    tokenizer_path = c.tokenizer_path if c.tokenizer_type == "wan2.1" else None
    run.loader, dataset = build_train_loader(cfg.dataloader_train, seed=seed, start_batch=start, dp_rank=dp_rank,
                                             dp_size=dp_size, tokenizer_path=tokenizer_path)
    log.info(f"Training data: {len(dataset)} samples; iterations {start} -> {run.max_iter}")
    return run


def _resume(run: Run, ckpt_cfg: DictConfig) -> None:
    latest = run.checkpointer.latest_iteration()
    if latest is not None:
        run.checkpointer.load(latest, run.parts)
        run.state["iteration"] = int(run.state.get("iteration", latest))
    elif ckpt_cfg.get("load_path"):
        source = str(ckpt_cfg.load_path)
        log.info(f"Initialising the trained weights from checkpoint.load_path={source}")
        run.model.load_model_file_state(safe_load(source, what="checkpoint.load_path"), source)


def train_step(run: Run, batch: dict, iteration: int) -> StepStats:
    """One iteration: loss (averaged over ranks), then backward/clip/step/EMA, or a skip for a non-finite loss."""
    t0 = time.perf_counter()
    model, optimizer = run.model, run.optimizer
    loss, _ = model.training_step(batch, iteration)
    loss_value = float(parallel.all_reduce_mean_(loss.detach().float()))  # a NaN on any rank: all ranks skip
    grad_norm, skipped = float("nan"), not math.isfinite(loss_value)
    if skipped:
        _count_nonfinite(run, loss_value, iteration)
    else:
        run.state["nonfinite_in_a_row"] = 0
        loss.backward()
        grad_norm, bad = clip_gradients(run.named_trainable, run.clip_norm)
        if bad:
            log.warning(f"Non-finite gradients at iteration {iteration + 1} zeroed in {len(bad)} "
                        f"parameter(s): {bad[:5]}{' ...' if len(bad) > 5 else ''}")  # fmt: skip
        optimizer.step()
        run.scheduler.step()
        if model.ema is not None:
            model.ema.update(model.net, iteration)
    optimizer.zero_grad(set_to_none=True)
    device = run.proc.device
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return StepStats(iteration + 1, run.max_iter, loss_value, lr_of(optimizer), grad_norm, time.perf_counter() - t0,
                     skipped, mem)  # fmt: skip


def _count_nonfinite(run: Run, loss_value: float, iteration: int) -> None:
    run.state["nonfinite_in_a_row"] += 1
    streak = run.state["nonfinite_in_a_row"]
    log.warning(f"Non-finite loss ({loss_value}) at iteration {iteration + 1}: skipping this update "
                f"({streak} in a row, limit {run.max_nonfinite})")  # fmt: skip
    if streak >= run.max_nonfinite:
        raise NonFiniteLossError(
            f"{streak} non-finite losses in a row (last at iteration {iteration + 1}); stopping. Lower "
            "optimizer.lr, check the data (scripts.validate_dataset), or raise trainer.max_consecutive_nonfinite. "
            f"The last good checkpoint is in {run.checkpointer.dir}"
        )


def _should_save(run: Run, iteration: int) -> bool:
    return iteration % run.checkpointer.save_iter == 0 or (iteration == run.max_iter and run.save_final)


def train(cfg: DictConfig) -> TrainResult:
    """Run (or resume) the training job `cfg` describes; see the module docstring."""
    proc = init_distributed(cfg.trainer.get("device", "auto"))
    job_dir = job_dir_of(cfg)
    with job_logging(job_dir, proc.is_main):
        if proc.is_main:
            atomic_write_text(job_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            log.info(f"Job dir {job_dir} (config.yaml, stdout.log, checkpoints/, tensorboard/); device {proc.device}, "
                     f"world size {proc.world_size}")  # fmt: skip
        run = build(cfg, proc, job_dir)
        start = run.state["iteration"]
        ctx = MonitorContext(job_dir, proc.is_main, start, run.max_iter, int(cfg.trainer.get("logging_iter", 10)))
        monitors = build_monitors(_callbacks(cfg), ctx)
        losses = _loop(run, monitors)
        log.info("Done with training.")
    return TrainResult(job_dir, start, run.state["iteration"], losses)


def _loop(run: Run, monitors: list[Monitor]) -> list[float]:
    losses: list[float] = []
    run.model.net.train()
    data = iter(run.loader)
    try:
        while run.state["iteration"] < run.max_iter:
            stats = train_step(run, next(data), run.state["iteration"])
            run.state["iteration"] = stats.iteration
            losses.append(stats.loss)
            for monitor in monitors:
                monitor.on_step(stats)
            if _should_save(run, stats.iteration):
                run.checkpointer.save(stats.iteration, run.parts)
                parallel.barrier()
    finally:
        for monitor in monitors:
            monitor.close()
    return losses


class _TqdmHandler(logging.StreamHandler):
    """Log lines printed above the progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def job_logging(job_dir: Path, is_main: bool):
    """INFO logs of the package to stdout and to JOB/stdout.log (main rank); handlers removed on exit."""
    logger = logging.getLogger("cosmos_predict2")
    fmt = logging.Formatter("[%(asctime)s|%(levelname)s] %(message)s", "%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = []
    if is_main:
        job_dir.mkdir(parents=True, exist_ok=True)
        handlers = [logging.FileHandler(job_dir / "stdout.log", mode="a", encoding="utf-8"), _TqdmHandler()]
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    old_level, old_propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(old_level)
        logger.propagate = old_propagate


__all__ = ["NonFiniteLossError", "Run", "TrainResult", "build", "job_dir_of", "train", "train_step"]
