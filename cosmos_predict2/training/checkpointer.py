"""Checkpoints in the guide's layout (docs/reference.md §8): one file per stateful part and iteration.

    JOB/checkpoints/model/iter_000000400.pt       what the training model says its file holds (Video2WorldModel)
    JOB/checkpoints/optim/iter_000000400.pt       optimizer state (whole tensors, also under FSDP2)
    JOB/checkpoints/scheduler/iter_000000400.pt   LambdaLR state
    JOB/checkpoints/trainer/iter_000000400.pt     {"iteration", "rng", ...}
    JOB/checkpoints/latest_checkpoint.txt         "iter_000000400.pt"

The checkpointer knows nothing of LoRA or FSDP: it saves and loads *parts*, objects with
`state_dict(is_main) -> dict | None` (every rank calls it; only the main rank's dict is written) and
`load_state_dict(state, source)`. Every file is written atomically (cosmos_predict2.io) and
`latest_checkpoint.txt` is replaced last, so a kill at any moment leaves it naming a complete set. Every load goes
through the one safe loader (`weights_only=True`, memory-mapped).

Resuming (`choose_resume`) starts from the set latest_checkpoint.txt names; when that file is missing or unreadable,
or its set is damaged (a part missing, truncated, empty), from the newest older *complete* set (all four parts
present and readable), with a warning naming what was skipped. Checkpoint files with no readable set among them
are an error, never a silent start from iteration 0 that would overwrite them (unless no set was ever complete
and latest_checkpoint.txt was never written: what a kill during the first save leaves).
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from cosmos_predict2.io import CheckpointFileError, atomic_torch_save, atomic_write_text, safe_load
from cosmos_predict2.parallel.dtensor import is_sharded

log = logging.getLogger(__name__)

PARTS = ("model", "optim", "scheduler", "trainer")
LATEST = "latest_checkpoint.txt"
DIVERGED = ".diverged"  # suffix of the files of a set whose weights gave non-finite losses (set_aside)
_NAME = re.compile(r"iter_([0-9]{9,})\.pt")


class CheckpointError(CheckpointFileError):
    """A checkpoint that cannot be resumed from (missing part, different LoRA config, different base)."""


class Part(Protocol):
    def state_dict(self, is_main: bool) -> dict | None: ...

    def load_state_dict(self, state: Mapping, source: str) -> None: ...


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:09d}.pt"


class Checkpointer:
    """Saves and restores the parts of a run under `JOB/checkpoints`."""

    def __init__(self, job_dir: str | os.PathLike, save_iter: int, is_main: bool = True) -> None:
        self.dir = Path(job_dir) / "checkpoints"
        self.save_iter = int(save_iter)
        self.is_main = is_main

    def path(self, part: str, iteration: int) -> Path:
        return self.dir / part / checkpoint_name(iteration)

    def latest_iteration(self) -> int | None:
        latest = self.dir / LATEST
        if not latest.is_file():
            return None
        name = latest.read_text(encoding="utf-8").strip()
        if not (name.startswith("iter_") and name.endswith(".pt") and name[5:-3].isdigit()):
            raise CheckpointError(f"{latest}: unexpected content {name!r} (expected e.g. iter_000001000.pt)")
        return int(name[len("iter_"):-len(".pt")])

    def save(self, iteration: int, parts: Mapping[str, Part]) -> Path:
        """Every rank calls this (sharded state is gathered); only the main rank writes."""
        states = {name: parts[name].state_dict(self.is_main) for name in PARTS}
        if self.is_main:
            for name in PARTS:
                atomic_torch_save(states[name], self.path(name, iteration))
            atomic_write_text(self.dir / LATEST, checkpoint_name(iteration) + "\n")
            log.info(f"Saved checkpoint {checkpoint_name(iteration)} to {self.dir}")
        return self.path("model", iteration)

    def read(self, iteration: int) -> dict[str, Mapping]:
        """Every part's state at `iteration`, read (memory-mapped) before any is applied, so that a damaged file is
        found before the run's state is touched. Raises CheckpointFileError naming the file."""
        states = {}
        for name in PARTS:
            path = self.path(name, iteration)
            if not path.is_file():
                raise CheckpointError(f"checkpoint file missing: {path}")
            states[name] = safe_load(path, what=f"{name} checkpoint")
        return states

    def apply(self, iteration: int, states: Mapping[str, Mapping], parts: Mapping[str, Part]) -> None:
        for name in PARTS:
            parts[name].load_state_dict(states[name], str(self.path(name, iteration)))
        log.info(f"Resumed from {self.dir / checkpoint_name(iteration)} (iteration {iteration})")

    def load(self, iteration: int, parts: Mapping[str, Part]) -> None:
        """Restore every part saved at `iteration`."""
        self.apply(iteration, self.read(iteration), parts)

    def files(self) -> dict[str, dict[int, Path]]:
        """`{part: {iteration: path}}` of the checkpoint files on disk."""
        found: dict[str, dict[int, Path]] = {}
        for name in PARTS:
            folder = self.dir / name
            matches = (_NAME.fullmatch(p.name) for p in folder.iterdir()) if folder.is_dir() else ()
            found[name] = {int(m[1]): folder / m[0] for m in matches if m}
        return found

    def complete_iterations(self) -> list[int]:
        """Iterations with a file for every part, newest first (a kill between two parts leaves an incomplete set)."""
        found = self.files()
        return sorted(set.intersection(*(set(found[name]) for name in PARTS)), reverse=True)

    def choose_resume(self) -> tuple[int, dict[str, Mapping]] | None:
        """(iteration, states) of the set to resume from (see the module docstring); None when nothing was saved."""
        complete = self.complete_iterations()
        try:
            latest = self.latest_iteration()
        except CheckpointError as e:
            log.warning(f"{e}: resuming from the newest complete checkpoint set instead")
            latest = None
        if latest is None and complete and not (self.dir / LATEST).exists():
            log.warning(f"{self.dir / LATEST} is missing: resuming from the newest complete checkpoint set, "
                        f"{checkpoint_name(complete[0])}")  # fmt: skip
        candidates = complete if latest is None else [latest, *(i for i in complete if i < latest)]
        problems = []
        for iteration in candidates:
            try:
                return iteration, self.read(iteration)
            except CheckpointFileError as e:  # the safe loader's message names the file
                problems.append(str(e))
                older = [i for i in complete if i < iteration]
                log.warning(f"Cannot resume from {checkpoint_name(iteration)}: {e}. "
                            + (f"Falling back to the previous complete set, {checkpoint_name(older[0])}."
                               if older else "No older complete set."))  # fmt: skip
        count = sum(len(v) for v in self.files().values())
        if latest is None and not complete:
            if count:  # a kill during the first save: those files were never a checkpoint, and will be rewritten
                log.warning(f"Ignoring {count} file(s) of incomplete checkpoint sets in {self.dir} (left by an "
                            "interrupted first save): starting from iteration 0")  # fmt: skip
            return None
        raise CheckpointError(
            f"no complete checkpoint set to resume from in {self.dir} ({count} checkpoint file(s), none of them part "
            f"of a set with all of {', '.join(PARTS)} readable{': ' + '; '.join(problems) if problems else ''}). "
            f"Starting again from iteration 0 would overwrite them: restore the damaged files, or move {self.dir} "
            "away (or use another job.name) to start from scratch."
        )

    def point_latest_at(self, iteration: int | None) -> None:
        """Main rank: make latest_checkpoint.txt name `iteration` (None: remove it, a rerun starts afresh)."""
        if iteration is None:
            (self.dir / LATEST).unlink(missing_ok=True)
        else:
            atomic_write_text(self.dir / LATEST, checkpoint_name(iteration) + "\n")

    def set_aside(self, iterations: list[int]) -> list[Path]:
        """Main rank: rename the files of these sets to `iter_N.pt.diverged`: kept for a post-mortem, never resumed
        from, and out of the way of the files a rerun will write."""
        moved = []
        for by_iteration in self.files().values():
            for iteration in iterations:
                if iteration in by_iteration:
                    path = by_iteration[iteration]
                    moved.append(path.rename(path.with_name(path.name + DIVERGED)))
        return moved


# --- the parts of a training run -------------------------------------------------------------------------------


class ModelPart:
    """The training model's own file (`Video2WorldModel.model_file_state`)."""

    def __init__(self, model) -> None:
        self.model = model

    def state_dict(self, is_main: bool) -> dict | None:
        return self.model.model_file_state(is_main)

    def load_state_dict(self, state: Mapping, source: str) -> None:
        self.model.load_model_file_state(state, source)


class OptimizerPart:
    """Optimizer state with whole tensors (gathered to the main rank under FSDP2, re-sharded on load)."""

    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.net, self.optimizer = net, optimizer

    def state_dict(self, is_main: bool) -> dict | None:
        if not is_sharded(self.net):
            return self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        # cpu_offload with full_state_dict keeps the gathered tensors on rank 0 only.
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.net, self.optimizer, options=options)

    def load_state_dict(self, state: Mapping, source: str) -> None:
        if not is_sharded(self.net):
            self.optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.net, self.optimizer, dict(state), options=StateDictOptions(full_state_dict=True))


class SchedulerPart:
    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler

    def state_dict(self, is_main: bool) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Mapping, source: str) -> None:
        self.scheduler.load_state_dict(dict(state))


class TrainerStatePart:
    """Iteration, counters and every RNG state. `values` is the trainer's dict, updated in place on load."""

    def __init__(self, values: dict) -> None:
        self.values = values

    def state_dict(self, is_main: bool) -> dict:
        return _to_plain({**self.values, "rng": rng_state()})

    def load_state_dict(self, state: Mapping, source: str) -> None:
        state = dict(state)
        set_rng_state(state.pop("rng"))
        self.values.update(state)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _to_plain(obj: Any) -> Any:
    """Python/numpy RNG states hold tuples and numpy arrays; weights_only loading accepts lists and tensors."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, (tuple, list)):
        return [_to_plain(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy(), int(np_state[2]), int(np_state[3]), float(np_state[4])))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


__all__ = [
    "CheckpointError",
    "Checkpointer",
    "ModelPart",
    "OptimizerPart",
    "SchedulerPart",
    "TrainerStatePart",
    "atomic_torch_save",
    "atomic_write_text",
    "checkpoint_name",
]
