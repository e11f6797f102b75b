"""Train a Cosmos-Predict2 Video2World model (LoRA or full fine-tuning).

    torchrun --nproc_per_node=8 -m scripts.train --config=cosmos_predict2/configs/base/config.py -- \
        experiment=predict2_video2world_lora_training_2b_cosmos_nemo_assets [key.path=value ...]
    python -m scripts.train --config=cosmos_predict2/configs/base/config.py -- experiment=NAME    (one process)
    python -m scripts.train --config=... --dryrun -- experiment=NAME    (config + parameter counts, reads no weight)

Rerunning the same command resumes from JOB/checkpoints/latest_checkpoint.txt.

A user error (bad config or override, dataset, LoRA targets, missing or mismatched checkpoint, diverging loss) prints
one `error: ...` line on rank 0 (the other ranks exit quietly with the same code) and exits with code 2 (config) or
1 (anything else); `--debug` or COSMOS_DEBUG=1 shows the traceback. Other exceptions are internal errors and keep
their traceback.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file, e.g. cosmos_predict2/configs/base/config.py")
    parser.add_argument("--dryrun", action="store_true",
                        help="print the resolved config and the parameter counts of the network with its LoRA "
                             "adapters (built on the meta device: no weight is read, nothing is allocated), then exit")
    parser.add_argument("--gpu_memory_gib", type=float, default=None,
                        help="with --dryrun: plan the memory modes for a GPU of this size (default: this machine's "
                             "GPU; docs/memory.md)")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of user errors too (same as COSMOS_DEBUG=1)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="Hydra overrides after `--`: experiment=NAME k=v")
    args = parser.parse_args(argv)
    args.opts = [o for o in args.opts if o != "--"]
    return args


def config_error_types() -> tuple[type[BaseException], ...]:
    """User errors found before anything is built (exit code 2)."""
    from cosmos_predict2.configs.compose import ConfigError
    from cosmos_predict2.configs.model_config import ModelConfigError
    from cosmos_predict2.lora import LoraConfigError

    return ConfigError, ModelConfigError, LoraConfigError


def user_error_types() -> tuple[type[BaseException], ...]:
    """The one list of training-time user errors: each prints one line instead of a traceback (exit code 1, or 2
    for `config_error_types`). Anything else is an internal error and keeps its traceback."""
    from cosmos_predict2.data import DatasetValidationError, StaleLatentCacheError, VideoReadError
    from cosmos_predict2.io import CheckpointFileError
    from cosmos_predict2.text import EmbeddingFileError
    from cosmos_predict2.training.checkpointer import CheckpointError
    from cosmos_predict2.training.lock import JobLockedError
    from cosmos_predict2.training.trainer import NonFiniteLossError

    # TrainingInterrupted (SIGINT/SIGTERM) is a SystemExit and passes through with its exit code 130/143.
    return (*config_error_types(), CheckpointError, CheckpointFileError, DatasetValidationError, VideoReadError,
            StaleLatentCacheError, EmbeddingFileError, NonFiniteLossError, JobLockedError,
            FileNotFoundError)  # fmt: skip


def debug_requested(args: argparse.Namespace | None = None) -> bool:
    return bool(args is not None and args.debug) or os.environ.get("COSMOS_DEBUG", "").lower() in ("1", "true", "yes")


def _rank() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:
        pass
    return int(os.environ.get("RANK", "0") or 0)


def report_user_error(error: BaseException) -> int:
    """Print `error: ...` on rank 0 only; return the exit code (2 for config errors, else 1)."""
    code = 2 if isinstance(error, config_error_types()) else 1
    if _rank() == 0:
        print(f"error: {error}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _run(args)
    except BaseException as e:
        if debug_requested(args) or not isinstance(e, Exception) or not isinstance(e, user_error_types()):
            raise
        return report_user_error(e)


def _run(args: argparse.Namespace) -> int:
    from cosmos_predict2.configs.compose import compose_config, to_yaml

    cfg = compose_config(args.config, args.opts)
    if args.dryrun:
        print(to_yaml(cfg))
        return dryrun(cfg, args.gpu_memory_gib)
    from cosmos_predict2.training.trainer import train

    train(cfg)
    return 0


def dryrun(cfg, gpu_memory_gib: float | None = None) -> int:
    """Build the network on the meta device, apply LoRA, print the guide's parameter lines and the memory plan
    (training/memory_plan.py: each memory mode's predicted peak and step time, the fastest that fits); no weight is
    read."""
    from cosmos_predict2.configs.lazy import instantiate
    from cosmos_predict2.training import memory_plan

    model = instantiate(cfg.model)  # validates model.config
    print("\n".join(model.parameter_report()))  # fails on LoRA targets that match nothing
    latent = memory_plan.latent_shape_of(cfg)
    if model.is_lora and latent is not None:
        gib = gpu_memory_gib if gpu_memory_gib is not None else memory_plan.gpu_memory_gib()
        host = memory_plan.host_memory_gib()
        rows, chosen = model.memory_plan(latent, gib, host)
        print(f"Latent size (T, H, W) per sample: {latent}")
        print(memory_plan.format_plan(rows, gib, chosen, host))
    return 0


if __name__ == "__main__":
    exit_code = main()
    from cosmos_predict2.parallel import end_process

    end_process(exit_code)
