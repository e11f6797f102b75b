"""The training loop: `build(cfg)` makes every part of the run, `train(cfg)` loops over `train_step`.

    train(cfg) -> TrainResult

Order of work in `build` (why): config/LoRA errors first (meta device, nothing allocated) -> weights ->
parallelisation (cosmos_predict2.parallel, from outside the network) -> EMA/optimizer/scheduler -> resume -> data.
The loop then reads: next batch -> `train_step` -> monitors -> checkpoint -> monitors' `after_step` (validation,
training/evaluation.py) -> their `should_stop` (early stopping). One process works without
torch.distributed; under torchrun every rank runs the same loop.

Faults (docs/troubleshooting.md, "Training" and "Interrupted runs and damaged checkpoints"):
- one run per job folder: rank 0 locks it (`training/lock.py`) before anything else; every rank learns the verdict;
- at start (lock held) temporary files of killed saves are removed, then the run resumes from the newest complete
  checkpoint set (the checkpointer falls back past damaged sets); config.yaml is written only once that worked;
- no checkpoint is saved while losses are non-finite; a run of them stops the job with latest_checkpoint.txt on the
  last checkpoint whose weights gave a finite loss and the command to go on with a lower learning rate;
- SIGINT/SIGTERM: the current step finishes, a checkpoint is saved, the process exits with 128 + the signal.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cosmos_predict2 import parallel
from cosmos_predict2.configs.lazy import instantiate
from cosmos_predict2.data import heldout
from cosmos_predict2.io import atomic_write_text, remove_temporary_files, safe_load
from cosmos_predict2.parallel import ProcessInfo, init_distributed, shutdown_distributed
from cosmos_predict2.training.checkpointer import (
    PARTS,
    Checkpointer,
    CheckpointError,
    ModelPart,
    OptimizerPart,
    SchedulerPart,
    TrainerStatePart,
    checkpoint_name,
)
from cosmos_predict2.training.data import build_train_loader
from cosmos_predict2.training.lock import JobLock, JobLockedError, command_line
from cosmos_predict2.training.memory_plan import latent_shape_of
from cosmos_predict2.training.monitors import Monitor, MonitorContext, StepStats, build_monitors
from cosmos_predict2.training.optim import build_lr_scheduler, clip_gradients, lr_of

log = logging.getLogger("cosmos_predict2.training")


class NonFiniteLossError(RuntimeError):
    """Too many NaN/inf losses in a row: the run is diverging or the data is broken."""


class TrainingInterrupted(SystemExit):
    """SIGINT/SIGTERM stopped the run (after saving a checkpoint where it could). A SystemExit, so that the process
    exits with 128 + the signal number (130, 143) as a killed process would, and `except Exception` lets it pass."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(128 + signum)
        self.signum, self.message = signum, message

    def __str__(self) -> str:
        return self.message


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
    dataset: torch.utils.data.Dataset | None = None  # the training dataset (validation reads the held-out rest)
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
    model.setup(proc.device, seed=seed, rank=dp_rank,  # raises LoRA/config errors before any weight is read
                latent_shape_T_H_W=latent_shape_of(cfg))  # for memory_mode=auto
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
                                             dp_size=dp_size, tokenizer_path=tokenizer_path,
                                             heldout=heldout.split_of(cfg.get("dataloader_val")))  # fmt: skip
    run.dataset = dataset
    log.info(f"Training data: {len(dataset)} samples; iterations {start} -> {run.max_iter}")
    return run


def _resume(run: Run, ckpt_cfg: DictConfig) -> None:
    choice = run.checkpointer.choose_resume()  # falls back past damaged sets; raises when none is readable
    # Every rank reads the files itself; ranks that chose different sets would deadlock in FSDP's collectives.
    _same_on_every_rank(-1 if choice is None else choice[0], run.proc)
    if choice is not None:
        iteration, states = choice
        configured = [float(g["initial_lr"]) for g in run.optimizer.param_groups]
        run.checkpointer.apply(iteration, states, run.parts)
        run.state["iteration"] = int(run.state.get("iteration", iteration))
        _use_configured_lr(run, configured)
    elif ckpt_cfg.get("load_path"):
        source = str(ckpt_cfg.load_path)
        log.info(f"Initialising the trained weights from checkpoint.load_path={source}")
        run.model.load_model_file_state(safe_load(source, what="checkpoint.load_path"), source)


def _use_configured_lr(run: Run, configured: list[float]) -> None:
    """The optimizer and scheduler states carry the learning rate they were saved with. A rerun with another
    optimizer.lr (what the non-finite-loss error tells the user to do) must train with the new one, on the same
    schedule position. An unchanged lr is left alone, so a plain resume stays bitwise identical."""
    scheduler = run.scheduler
    if [float(x) for x in scheduler.base_lrs] == configured:
        return
    log.info(f"optimizer.lr={configured[0]:g} (the checkpoint was trained with {float(scheduler.base_lrs[0]):g}): "
             f"going on with {configured[0]:g}")  # fmt: skip
    scheduler.base_lrs = list(configured)
    for group, base, factor in zip(run.optimizer.param_groups, configured, scheduler.lr_lambdas):
        group["initial_lr"] = base
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in run.optimizer.param_groups]  # what get_last_lr() reports


def _same_on_every_rank(value: int, proc: ProcessInfo) -> int:
    if proc.world_size == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value, -value], dtype=torch.int64, device=proc.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != -int(t[1]):
        raise CheckpointError(f"the ranks chose different checkpoints to resume from (iterations {-int(t[1])} to "
                              f"{int(t[0])}; -1: none): every rank must see the same checkpoints folder (a shared "
                              "file system for multi-node jobs)")  # fmt: skip
    return value


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


def _should_save(run: Run, iteration: int) -> bool:
    if run.state["nonfinite_in_a_row"]:  # the weights may be what makes the loss non-finite: never save them
        return False
    return iteration % run.checkpointer.save_iter == 0 or (iteration == run.max_iter and run.save_final)


def train(cfg: DictConfig) -> TrainResult:
    """Run (or resume) the training job `cfg` describes; see the module docstring."""
    proc = init_distributed(cfg.trainer.get("device", "auto"))
    result = _train(cfg, proc)  # its network, optimizer and process-group handles are gone when it returns
    shutdown_distributed(proc)  # finished: every rank got here
    return result


def _train(cfg: DictConfig, proc: ProcessInfo) -> TrainResult:
    job_dir = job_dir_of(cfg)
    lock = _lock_job_dir(job_dir, proc)
    try:
        with job_logging(job_dir, proc.is_main):
            if proc.is_main:
                log.info(f"Job dir {job_dir} (config.yaml, stdout.log, checkpoints/, tensorboard/); device "
                         f"{proc.device}, world size {proc.world_size}")  # fmt: skip
                _remove_temporary_files(job_dir / "checkpoints")
            run = build(cfg, proc, job_dir)
            if proc.is_main:  # only now: a refused or failed resume leaves the job's config.yaml as it was
                atomic_write_text(job_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            start = run.state["iteration"]
            ctx = MonitorContext(job_dir, proc.is_main, start, run.max_iter, int(cfg.trainer.get("logging_iter", 10)),
                                 run=run, cfg=cfg)  # fmt: skip
            losses = _loop(run, build_monitors(_callbacks(cfg), ctx))
            log.info("Done with training.")
    finally:
        if lock is not None:
            lock.release()
    return TrainResult(job_dir, start, run.state["iteration"], losses)


def _lock_job_dir(job_dir: Path, proc: ProcessInfo) -> JobLock | None:
    """Rank 0 locks the job folder. This is the run's first collective: the verdict is broadcast, so that when
    rank 0 refuses, every rank raises the same error instead of waiting in a collective rank 0 never joins."""
    lock, refusal = None, ""
    if proc.is_main:
        try:
            lock = JobLock(job_dir).acquire()
        except JobLockedError as e:
            refusal = str(e)
    if proc.world_size > 1:
        import torch.distributed as dist

        shared = [refusal]
        dist.broadcast_object_list(shared, src=0)
        refusal = shared[0]
    if refusal:
        raise JobLockedError(refusal)
    return lock


def _remove_temporary_files(checkpoints: Path) -> None:
    """Main rank, lock held (so no other process writes there): what killed saves left in the checkpoint folders."""
    removed = [p for folder in (checkpoints, *(checkpoints / part for part in PARTS))
               for p in remove_temporary_files(folder)]  # fmt: skip
    if removed:
        log.info(f"Removed {len(removed)} temporary file(s) left by interrupted saves: "
                 f"{', '.join(str(p.relative_to(checkpoints)) for p in removed)}")  # fmt: skip


def _loop(run: Run, monitors: list[Monitor]) -> list[float]:
    losses: list[float] = []
    run.model.net.train()
    data = iter(run.loader)
    try:
        with _StopRequests() as stops:
            while run.state["iteration"] < run.max_iter:
                stats = train_step(run, next(data), run.state["iteration"])
                run.state["iteration"] = stats.iteration
                losses.append(stats.loss)
                for monitor in monitors:
                    monitor.on_step(stats)
                if run.state["nonfinite_in_a_row"] >= run.max_nonfinite:
                    raise _stop_diverged(run, stats.iteration)
                saved = _should_save(run, stats.iteration)
                if saved:
                    run.checkpointer.save(stats.iteration, run.parts)
                    parallel.barrier()
                for monitor in monitors:  # validation runs here: after the save, so it cannot lose the checkpoint
                    monitor.after_step(stats.iteration, saved)
                signum = _agreed_stop(run, stops)  # after the save: a signal during it just stops the run next
                if signum:
                    raise _stop_interrupted(run, signum, saved)
                if any(monitor.should_stop() for monitor in monitors):  # early stopping: a normal end
                    if not saved:
                        run.checkpointer.save(stats.iteration, run.parts)
                        parallel.barrier()
                    break
            if run.state["nonfinite_in_a_row"]:  # the last iterations were skipped: there is no final checkpoint
                raise _stop_diverged(run, run.state["iteration"])
    finally:
        for monitor in monitors:
            monitor.close()
    return losses


# --- stopping: non-finite losses and signals -------------------------------------------------------------------


def _stop_diverged(run: Run, iteration: int) -> NonFiniteLossError:
    """Roll the job back to its last checkpoint whose weights gave a finite loss; the error says how to go on.

    The loss of iteration i is computed with the weights of checkpoint i-1 (skipped steps change nothing). If the
    streak began at iteration `first`, checkpoint first-1 already holds the diverging weights (saved after a finite
    loss, before anything looked wrong): the newest good checkpoint is at most first-2."""
    streak = run.state["nonfinite_in_a_row"]
    first, ck = iteration - streak + 1, run.checkpointer
    good = next((i for i in ck.complete_iterations() if i <= first - 2), None)
    if run.proc.is_main:
        moved = ck.set_aside([i for i in ck.complete_iterations() if first - 1 <= i <= iteration])
        ck.point_latest_at(good)
        if moved:
            names = ", ".join(sorted({p.name.removesuffix(".diverged") for p in moved}))
            log.warning(f"Set aside the checkpoint(s) holding the diverging weights: {names} renamed to "
                        "*.pt.diverged (never resumed from)")  # fmt: skip
    parallel.barrier()  # rank 0's renames are done before any rank exits (torchrun then stops the others)
    lr = float(run.optimizer.param_groups[0].get("initial_lr", lr_of(run.optimizer)))
    where = (f"{ck.dir / 'latest_checkpoint.txt'} now names {checkpoint_name(good)}, the last checkpoint whose "
             "weights gave a finite loss" if good is not None else
             "No checkpoint gave a finite loss, so a rerun starts from the beginning")  # fmt: skip
    command = command_line(replace={"optimizer.lr": f"{lr / 10:.3g}"})
    return NonFiniteLossError(
        f"{streak} non-finite losses in a row (first at iteration {first}, last at iteration {iteration}); stopping. "
        f"{where}. To go on with a 10x lower learning rate, run `{command}`; otherwise check the data "
        "(scripts.validate_dataset) or raise trainer.max_consecutive_nonfinite."
    )


class _StopRequests:
    """SIGINT/SIGTERM handlers for the loop. The first signal only sets `signum`: the loop checks it after each step,
    agrees on it with the other ranks and saves (a save needs every rank, so a signal must not cut a step or a
    collective short). A second Ctrl-C raises TrainingInterrupted at once, without saving. Signals within
    SAME_PRESS_S of the first are the same request: a terminal's Ctrl-C reaches every process of the foreground
    group and torchrun's agent forwards it to its workers again. SIGTERM never escalates (Slurm and torchrun both
    send it): a preempted job gets its grace period to save."""

    SAME_PRESS_S = 2.0

    def __init__(self) -> None:
        self.signum, self._first_at, self._previous = 0, 0.0, {}

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():  # signal.signal works in the main thread only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if not self.signum:
            self.signum, self._first_at = signum, time.monotonic()
            # os.write, not logging: the handler must not need the logging lock that the interrupted code may hold
            os.write(2, f"\n{name} received: the run stops after this iteration and saves a checkpoint (Ctrl-C "
                        "again to stop at once, without saving)\n".encode())  # fmt: skip
        elif signum == signal.SIGINT and time.monotonic() - self._first_at > self.SAME_PRESS_S:
            message = f"{name} again: stopped at once, without saving a checkpoint"
            os.write(2, f"{message}\n".encode())  # a SystemExit prints nothing
            raise TrainingInterrupted(signum, message)


def _agreed_stop(run: Run, stops: _StopRequests) -> int:
    """The signal any rank received (0: none), the same on every rank."""
    if run.proc.world_size == 1:
        return stops.signum
    import torch.distributed as dist

    t = torch.tensor([stops.signum], dtype=torch.int64, device=run.proc.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def _stop_interrupted(run: Run, signum: int, saved: bool) -> TrainingInterrupted:
    """Save the iteration reached (unless the loop just did, or losses are non-finite) and say how to resume."""
    iteration, ck = run.state["iteration"], run.checkpointer
    if not saved and not run.state["nonfinite_in_a_row"]:
        ck.save(iteration, run.parts)
        parallel.barrier()
        saved = True
    if saved:
        what = f"saved checkpoint {checkpoint_name(iteration)} in {ck.dir}"
    else:
        what = "saved nothing (the last losses were non-finite)"
    message = (f"{signal.Signals(signum).name}: stopped at iteration {iteration} and {what}. Rerun the same command "
               f"to resume: {command_line()}")  # fmt: skip
    log.warning(message)  # a SystemExit prints nothing: this line is what the user sees
    return TrainingInterrupted(signum, message)


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


__all__ = ["JobLockedError", "NonFiniteLossError", "Run", "TrainResult", "TrainingInterrupted", "build", "job_dir_of",
           "train", "train_step"]
