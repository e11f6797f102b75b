"""The training loop: build everything from the composed config, resume, train, checkpoint, log.

    train(cfg) -> TrainResult

Order of work (why): config/LoRA errors first (meta device, nothing allocated) -> weights -> parallelisation ->
EMA/optimizer/scheduler -> resume -> data -> loop. One process works without torch.distributed; with torchrun
the trainer calls cosmos_predict2.parallel (init_distributed, parallelize_net, all_reduce_mean_, barrier).
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

from cosmos_predict2.configs.lazy import instantiate
from cosmos_predict2.training.checkpointer import Checkpointer, atomic_write_text
from cosmos_predict2.training.data import build_train_loader
from cosmos_predict2.training.optim import build_lr_scheduler, clip_gradients, lr_of

log = logging.getLogger("cosmos_predict2.training")


class NonFiniteLossError(RuntimeError):
    """Too many NaN/inf losses in a row: the run is diverging or the data is broken."""


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


@dataclass
class TrainResult:
    job_dir: Path
    start_iteration: int
    final_iteration: int
    losses: list[float]  # per iteration of this process's run (NaN for skipped steps)


def _parallel():
    """cosmos_predict2.parallel, or None when it is not available (single-process runs do not need it)."""
    try:
        import cosmos_predict2.parallel as parallel
    except ImportError:
        return None
    return parallel if hasattr(parallel, "init_distributed") else None


def init_distributed(device_pref: str) -> DistInfo:
    import os

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    parallel = _parallel()
    if world_size > 1:
        if parallel is None:
            raise RuntimeError("WORLD_SIZE > 1 but cosmos_predict2.parallel.init_distributed is not available")
        info = parallel.init_distributed(device_pref)
        return DistInfo(info.rank, info.world_size, info.local_rank, torch.device(info.device))
    if device_pref == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_pref)
    if device.type == "cuda":
        torch.cuda.set_device(device.index or 0)
    return DistInfo(device=device)


def job_dir_of(cfg: DictConfig) -> Path:
    job = cfg.job
    return Path(job.root) / job.project / job.group / job.name


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


class IterSpeed:
    """The guide's `iter_speed` lines: mean seconds per iteration over the last `every_n` iterations, after
    skipping the first `hit_thres` (warm-up, allocator growth, cudnn autotuning)."""

    def __init__(self, hit_thres: int = 5, every_n: int = 10) -> None:
        self.hit_thres, self.every_n = int(hit_thres), max(int(every_n), 1)
        self.seen, self.window = 0, []

    def __call__(self, iteration: int, seconds: float, loss: float) -> None:
        self.seen += 1
        if self.seen <= self.hit_thres:
            return
        self.window.append(seconds)
        if len(self.window) >= self.every_n:
            speed = sum(self.window) / len(self.window)
            log.info(f"{iteration} : iter_speed {speed:.2f} seconds per iteration | Loss: {loss:.4f}")
            self.window = []


class TensorBoardLogger:
    def __init__(self, log_dir: Path, every_n: int = 1) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))
        self.every_n = max(int(every_n), 1)

    def __call__(self, iteration: int, scalars: dict[str, float]) -> None:
        if iteration % self.every_n:
            return
        for name, value in scalars.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(f"train/{name}", value, iteration)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _callback_cfg(cfg: DictConfig, name: str) -> dict:
    callbacks = OmegaConf.to_container(cfg.trainer.get("callbacks", {}) or {}, resolve=True)
    return dict(callbacks.get(name) or {})


def train(cfg: DictConfig) -> TrainResult:
    """Run (or resume) the training job `cfg` describes; see the module docstring."""
    dist = init_distributed(cfg.trainer.get("device", "auto"))
    is_main = dist.rank == 0
    job_dir = job_dir_of(cfg)
    with job_logging(job_dir, is_main):
        if is_main:
            atomic_write_text(job_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            log.info(f"Job dir {job_dir} (config.yaml, stdout.log, checkpoints/, tensorboard/); device {dist.device}, "
                     f"world size {dist.world_size}")  # fmt: skip
        return _train(cfg, dist, job_dir, is_main)


def _train(cfg: DictConfig, dist: DistInfo, job_dir: Path, is_main: bool) -> TrainResult:
    parallel = _parallel() if dist.world_size > 1 else None
    seed = int(cfg.trainer.seed)
    seed_everything(seed + dist.rank)

    cp_size = int(cfg.model_parallel.get("context_parallel_size", 1))
    # The ranks of one context-parallel group share a sample, so they must also draw the same sigma, noise and
    # text dropout: the training step is seeded with the data-parallel rank, not the global one.
    dp_rank = int(parallel.dp_rank_and_size(cp_size)[0]) if parallel is not None else 0
    model = instantiate(cfg.model)
    model.setup(dist.device, seed=seed, rank=dp_rank)  # raises LoRA/config errors before any weight is read
    if parallel is not None:
        model.net = parallel.parallelize_net(
            model.net, fsdp_shard_size=int(model.config.fsdp_shard_size),
            context_parallel_size=cp_size,
        )  # fmt: skip
    model.init_ema()
    named_trainable = [(n, p) for n, p in model.net.named_parameters() if p.requires_grad]
    optimizer = instantiate(cfg.optimizer, params=[p for _, p in named_trainable])
    scheduler = build_lr_scheduler(optimizer, instantiate(cfg.scheduler))

    ckpt_cfg = cfg.checkpoint
    checkpointer = Checkpointer(job_dir, int(ckpt_cfg.save_iter), is_main=is_main)
    start_iteration, nonfinite_in_a_row = 0, 0
    latest = checkpointer.latest_iteration()
    if latest is not None:
        state = checkpointer.load(model, optimizer, scheduler, latest)
        start_iteration, nonfinite_in_a_row = int(state["iteration"]), int(state.get("nonfinite_in_a_row", 0))
    elif ckpt_cfg.get("load_path"):
        from cosmos_predict2.training.checkpointer import _load

        log.info(f"Initialising the trained weights from checkpoint.load_path={ckpt_cfg.load_path}")
        Checkpointer.load_model(model, _load(Path(ckpt_cfg.load_path)), str(ckpt_cfg.load_path))

    max_iter = int(cfg.trainer.max_iter)
    loader, dataset = build_train_loader(cfg.dataloader_train, seed=seed, start_batch=start_iteration,
                                         context_parallel_size=cp_size if parallel is not None else 1)
    log.info(f"Training data: {len(dataset)} samples; iterations {start_iteration} -> {max_iter}")

    clip_norm = float(_callback_cfg(cfg, "grad_clip").get("clip_norm", 1.0))
    iter_speed = IterSpeed(**_callback_cfg(cfg, "iter_speed"))
    tb_cfg = _callback_cfg(cfg, "tensorboard")
    tb = TensorBoardLogger(job_dir / "tensorboard", tb_cfg.get("every_n", 1)) if (
        is_main and tb_cfg.get("enabled", True)) else None
    bar = None
    if is_main and _callback_cfg(cfg, "progress_bar").get("enabled", True):
        from tqdm import tqdm

        bar = tqdm(total=max_iter, initial=start_iteration, desc="train", unit="it", dynamic_ncols=True,
                   file=sys.stderr)  # fmt: skip
    max_nonfinite = int(cfg.trainer.get("max_consecutive_nonfinite", 3))
    logging_iter = max(int(cfg.trainer.get("logging_iter", 10)), 1)
    losses: list[float] = []

    model.net.train()
    iteration = start_iteration
    data_iter = iter(loader)
    try:
        while iteration < max_iter:
            t0 = time.perf_counter()
            batch = next(data_iter)
            loss, _ = model.training_step(batch, iteration)
            loss_value = loss.detach().float()
            if parallel is not None:
                parallel.all_reduce_mean_(loss_value)  # a NaN on any rank makes the mean NaN: all ranks skip
            loss_value = float(loss_value)
            grad_norm = float("nan")
            if not math.isfinite(loss_value):
                nonfinite_in_a_row += 1
                log.warning(f"Non-finite loss ({loss_value}) at iteration {iteration + 1}: skipping this update "
                            f"({nonfinite_in_a_row} in a row, limit {max_nonfinite})")  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                if nonfinite_in_a_row >= max_nonfinite:
                    raise NonFiniteLossError(
                        f"{nonfinite_in_a_row} non-finite losses in a row (last at iteration {iteration + 1}); "
                        "stopping. Lower optimizer.lr, check the data (scripts.validate_dataset), or raise "
                        "trainer.max_consecutive_nonfinite. The last good checkpoint is in "
                        f"{checkpointer.dir}"
                    )
            else:
                nonfinite_in_a_row = 0
                loss.backward()
                grad_norm, bad = clip_gradients(named_trainable, clip_norm)
                if bad:
                    log.warning(f"Non-finite gradients at iteration {iteration + 1} zeroed in {len(bad)} "
                                f"parameter(s): {bad[:5]}{' ...' if len(bad) > 5 else ''}")  # fmt: skip
                optimizer.step()
                scheduler.step()
                if model.ema is not None:
                    model.ema.update(model.net, iteration)
                optimizer.zero_grad(set_to_none=True)
            iteration += 1
            losses.append(loss_value)
            seconds = time.perf_counter() - t0

            lr = lr_of(optimizer)
            if bar is not None:
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.3g}", s_it=f"{seconds:.2f}", refresh=False)
                bar.update(1)
            iter_speed(iteration, seconds, loss_value)
            if iteration % logging_iter == 0:
                log.info(f"iteration {iteration}/{max_iter} | loss {loss_value:.4f} | lr {lr:.4g} | "
                         f"grad_norm {grad_norm:.4f} | {seconds:.2f} s/it")  # fmt: skip
            if tb is not None:
                mem = torch.cuda.max_memory_allocated() / 2**30 if dist.device.type == "cuda" else None
                tb(iteration, {"loss": loss_value, "lr": lr, "grad_norm": grad_norm, "s_per_it": seconds,
                               "gpu_memory_gib": mem})  # fmt: skip

            final = iteration == max_iter and bool(ckpt_cfg.get("save_final", True))
            if iteration % checkpointer.save_iter == 0 or final:
                checkpointer.save(model, optimizer, scheduler, {"nonfinite_in_a_row": nonfinite_in_a_row}, iteration)
                if parallel is not None:
                    parallel.barrier()
    finally:
        if bar is not None:
            bar.close()
        if tb is not None:
            tb.close()
    log.info("Done with training.")
    return TrainResult(job_dir, start_iteration, iteration, losses)


__all__ = ["NonFiniteLossError", "TrainResult", "job_dir_of", "train"]
