"""Checkpoints in the guide's layout (SPEC section 8), written atomically.

    JOB/checkpoints/model/iter_000000400.pt       LoRA: adapters (+ EMA) + lora_config; full: net.* (+ net_ema.*)
    JOB/checkpoints/optim/iter_000000400.pt       optimizer state
    JOB/checkpoints/scheduler/iter_000000400.pt   LambdaLR state
    JOB/checkpoints/trainer/iter_000000400.pt     {"iteration", "rng", "data", ...}
    JOB/checkpoints/latest_checkpoint.txt         "iter_000000400.pt"

Every file is written to a temporary name in its folder, fsynced and renamed; `latest_checkpoint.txt` is
replaced last. A kill at any moment therefore leaves latest_checkpoint.txt naming a complete set of files
(the previous one, or the new one). Every load uses `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cosmos_predict2.lora import (
    LoraConfigError,
    adapter_checkpoint,
    is_adapter_checkpoint,
    load_adapter_weights,
    split_adapter_checkpoint,
)

log = logging.getLogger(__name__)

PARTS = ("model", "optim", "scheduler", "trainer")
LATEST = "latest_checkpoint.txt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from (missing part, different LoRA config, different base)."""


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:09d}.pt"


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


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


def _load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file missing: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


class Checkpointer:
    """Saves and restores model/optimizer/scheduler/trainer state under `JOB/checkpoints`."""

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
        if not (name.startswith("iter_") and name.endswith(".pt")):
            raise CheckpointError(f"{latest}: unexpected content {name!r} (expected e.g. iter_000001000.pt)")
        return int(name[len("iter_"):-len(".pt")])

    # --- save ----------------------------------------------------------------------------------------------

    def model_state(self, model) -> dict:
        """LoRA: the self-describing adapter file; full: `net.*` (+ `net_ema.*`), the reference layout."""
        weights = model.trainable_state_dict()
        ema = model.ema.state_dict() if model.ema is not None else None
        if model.is_lora:
            return adapter_checkpoint(weights, model.lora_spec, model.base_info(), ema)
        state = {"net." + k: v for k, v in weights.items()}
        if ema is not None:
            state.update({"net_ema." + k: v for k, v in ema.items()})
        return state

    def save(self, model, optimizer, scheduler, trainer_state: dict, iteration: int) -> Path:
        # Every rank must take part in gathering sharded state; only the main rank writes.
        model_state = self.model_state(model)
        optim_state = optimizer_state_dict(model, optimizer)
        if self.is_main:
            atomic_torch_save(model_state, self.path("model", iteration))
            atomic_torch_save(optim_state, self.path("optim", iteration))
            atomic_torch_save(scheduler.state_dict(), self.path("scheduler", iteration))
            atomic_torch_save(
                _to_plain({**trainer_state, "iteration": iteration, "rng": rng_state()}),
                self.path("trainer", iteration),
            )
            atomic_write_text(self.dir / LATEST, checkpoint_name(iteration) + "\n")
            log.info(f"Saved checkpoint {checkpoint_name(iteration)} to {self.dir}")
        return self.path("model", iteration)

    # --- load ----------------------------------------------------------------------------------------------

    def load(self, model, optimizer, scheduler, iteration: int) -> dict:
        """Restore everything saved at `iteration`; returns the trainer state dict."""
        model_path = self.path("model", iteration)
        self.load_model(model, _load(model_path), str(model_path))
        load_optimizer_state_dict(model, optimizer, _load(self.path("optim", iteration)))
        scheduler.load_state_dict(_load(self.path("scheduler", iteration)))
        trainer_state = _load(self.path("trainer", iteration))
        set_rng_state(trainer_state["rng"])
        log.info(f"Resumed from {self.dir / checkpoint_name(iteration)} (iteration {iteration})")
        return trainer_state

    @staticmethod
    def load_model(model, state: dict, source: str) -> None:
        if model.is_lora:
            if not is_adapter_checkpoint(state):
                raise CheckpointError(f"{source} is not a LoRA adapter checkpoint, but this run trains LoRA")
            spec, base, weights = split_adapter_checkpoint(state, use_ema=False)
            ours = model.lora_spec
            if (spec.rank, float(spec.alpha), sorted(spec.target_modules)) != (
                ours.rank, float(ours.alpha), sorted(ours.target_modules)
            ):
                raise LoraConfigError(
                    f"{source} was trained with rank={spec.rank}, alpha={spec.alpha}, targets={spec.target_modules}"
                    f" but the config says rank={ours.rank}, alpha={ours.alpha}, targets={ours.target_modules}; "
                    "resume with the same model.config.lora_* values or use a new job name"
                )
            _check_base(model, base, source)
            load_adapter_weights(model.net, weights, source)
            ema_weights = {k[len("net_ema."):]: v for k, v in state.items() if k.startswith("net_ema.")}
        else:
            if is_adapter_checkpoint(state):
                raise CheckpointError(f"{source} is a LoRA adapter checkpoint, but this run is full fine-tuning")
            from cosmos_predict2.networks.weights import extract_prefixed

            net_weights = extract_prefixed(state, "net.")
            if _is_sharded(model.net):
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

                set_model_state_dict(model.net, net_weights, options=StateDictOptions(full_state_dict=True))
            else:
                model.net.load_state_dict(net_weights, strict=True)
            ema_weights = extract_prefixed(state, "net_ema.")
        if model.ema is not None:
            if not ema_weights:
                raise CheckpointError(f"{source} has no EMA weights but model.config.pipe_config.ema.enabled is true")
            model.ema.load_state_dict(ema_weights, source)


def _check_base(model, base: dict, source: str) -> None:
    """The adapters only make sense on the base they were trained on."""
    ours = model.config
    if base.get("model_size") not in (None, ours.model_size):
        raise CheckpointError(f"{source} was trained on model_size {base.get('model_size')}, config says "
                              f"{ours.model_size}")  # fmt: skip
    recorded = base.get("sha256")
    if recorded and ours.hash_base_checkpoint and ours.dit_path:
        current = model.base_info()["sha256"]
        if current and current != recorded:
            raise CheckpointError(
                f"{source} was trained on base weights {base.get('dit_path')} (sha256 {recorded[:12]}...) but "
                f"model.config.dit_path={ours.dit_path} has sha256 {current[:12]}...; resume with the same base"
            )


def _is_sharded(net) -> bool:
    return any(hasattr(p, "full_tensor") for p in net.parameters())


def optimizer_state_dict(model, optimizer) -> dict:
    if _is_sharded(model.net):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(model.net, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                                        cpu_offload=True))
    return optimizer.state_dict()


def load_optimizer_state_dict(model, optimizer, state: dict) -> None:
    if _is_sharded(model.net):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model.net, optimizer, state, options=StateDictOptions(full_state_dict=True))
        return
    optimizer.load_state_dict(state)


__all__ = ["CheckpointError", "Checkpointer", "atomic_torch_save", "atomic_write_text", "checkpoint_name"]
