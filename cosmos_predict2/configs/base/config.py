"""The training config: base values, the ConfigStore groups, and the experiments.

`make_config()` returns the root node (with its Hydra `defaults` list); `scripts/train.py` composes it with the
command-line overrides (`experiment=NAME key.path=value ...`) through `cosmos_predict2.configs.compose`.

Root keys:
    job              project/group/name -> job dir `{job.root}/PROJECT/GROUP/NAME` (root "checkpoints")
    model            L(Video2WorldModel)(config=...)            group `model`
    optimizer        L(build_optimizer)(lr=..., ...)            group `optimizer`
    scheduler        L(LambdaLinearScheduler)(...)             group `scheduler`
    checkpoint       save_iter, load_path, type                 group `ckpt_type` sets `type`
    trainer          max_iter, seed, logging_iter, callbacks    group `callbacks` fills trainer.callbacks
    dataloader_train L(DataLoader)(dataset=L(Dataset)(...), sampler=..., batch_size=..., num_workers=...)
    dataloader_val   group `dataloader_val`
    model_parallel   context_parallel_size
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import warnings
from pathlib import Path

from hydra.core.config_store import ConfigStore

from cosmos_predict2.configs.base.defaults.callbacks import register_callbacks
from cosmos_predict2.configs.base.defaults.checkpoint import register_checkpoint
from cosmos_predict2.configs.base.defaults.data import register_dataloader_train, register_dataloader_val
from cosmos_predict2.configs.base.defaults.lora_preset import register_lora_presets
from cosmos_predict2.configs.base.defaults.model import register_model
from cosmos_predict2.configs.base.defaults.model_variant import register_model_variants
from cosmos_predict2.configs.base.defaults.optimizer import register_optimizer
from cosmos_predict2.configs.base.defaults.scheduler import register_scheduler

DEFAULTS = [
    "_self_",
    {"model": "predict2_video2world_fsdp_2b"},
    {"optimizer": "fusedadamw"},
    {"scheduler": "lambdalinear"},
    {"ckpt_type": "standard"},
    {"callbacks": "basic"},
    {"dataloader_val": "mock"},
    # "default" changes nothing; an experiment selects a registered loader with `override /dataloader_train`
    # (`dataloader_train=NAME` then swaps it), or writes its own, which wins over this group
    {"dataloader_train": "default"},
    {"experiment": None},
    {"lora_preset": None},  # after the experiment: a preset overrides its rank/alpha/lr
    {"model_variant": None},  # after the experiment: a released checkpoint with its frame count and size
]


def base_config() -> dict:
    return dict(
        defaults=DEFAULTS,
        job=dict(project="posttraining", group="video2world", name="default", root="checkpoints"),
        trainer=dict(
            max_iter=1000,
            logging_iter=10,  # lines in stdout.log every n iterations (the progress bar updates every iteration)
            seed=0,
            distributed_parallelism="fsdp",
            device="auto",  # "auto" = cuda when available, else cpu
            max_consecutive_nonfinite=3,  # stop after this many NaN/inf losses in a row
            callbacks=dict(),
            # Validation (docs/guide.md "Validation"; the set comes from `dataloader_val`): every validation_iter
            # iterations, the loss at fixed sigmas on the validation clips; every generate_every-th validation,
            # held-out generations scored against the real frames.
            run_validation=False,
            validation_iter=500,
            validation=dict(
                max_clips=16,  # validation clips for the loss (0: all)
                num_sigmas=5,  # quantiles of the training sigma distribution
                num_conditional_frames=1,  # latent frames given, for the loss and the generations
                seed=0,  # noise seeds of the loss and of the generations
                generate_every=4,  # held-out generations every n-th validation (0: never)
                num_generate=2,  # clips generated
                num_steps=35,  # sampler steps (the inference default)
                guidance=7.0,  # the inference default; negative branch: the zero text embedding
                best_metric="val/loss",  # checkpoints/best_checkpoint.txt: val/loss (lower), val/psnr, val/ssim
                patience=0,  # stop after this many evaluations without a better best_metric (0: never)
                raise_errors=False,  # False: an evaluation error is logged and training goes on
            ),
        ),
        checkpoint=dict(
            type="standard",
            save_iter=1000,
            load_path="",  # optional model file to initialise from (adapters, or a full model for full FT)
            save_final=True,  # also save at max_iter when it is not a multiple of save_iter
        ),
        model_parallel=dict(context_parallel_size=1),
        dataloader_train=dict(),
        dataloader_val=dict(),
    )


_REGISTERED = False


def register_all() -> None:
    """Fill the ConfigStore with the groups and every experiment module (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    register_model()
    register_optimizer()
    register_scheduler()
    register_checkpoint()
    register_callbacks()
    register_dataloader_val()
    register_dataloader_train()
    register_lora_presets()
    register_model_variants()
    import_experiments()
    _REGISTERED = True


class DuplicateExperimentError(ValueError):
    """Two experiment files register the same experiment name (one would silently shadow the other)."""


def import_experiments(package: str = "cosmos_predict2.configs.base.experiment") -> list[str]:
    """Import every module under `package` (recursively): each registers its experiments when imported, so a new
    file dropped into configs/base/experiment/ is picked up without editing any list.

    A file that fails to import is reported (its name and error) and skipped: one broken user file must not take
    every shipped experiment down with it. Two files registering the same experiment name is an error naming both.
    """
    pkg = importlib.import_module(package)
    names, origins = [], {}
    with _recording_experiment_stores(origins) as current:
        for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
            current["file"] = _module_file(info)
            try:
                importlib.import_module(info.name)
            except DuplicateExperimentError:
                raise
            except Exception as e:  # a user's file: report it, keep the others
                IMPORT_ERRORS[current["file"]] = f"{type(e).__name__}: {e}"
                warnings.warn(f"experiment file {current['file']} failed to import ({type(e).__name__}: {e}); "
                              "its experiments are unavailable, the other experiments load", stacklevel=1)
                continue
            names.append(info.name)
    return names


IMPORT_ERRORS: dict[str, str] = {}  # experiment file -> why it could not be imported


def _module_file(info: pkgutil.ModuleInfo) -> str:
    path = Path(info.module_finder.path) / (info.name.rsplit(".", 1)[-1] + ("/__init__.py" if info.ispkg else ".py"))
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def _recording_experiment_stores(origins: dict[str, str]):
    """Record which file stores each experiment name (users store with the guide's `cs.store` loop or
    `register_experiments`), and refuse a second file storing a name already taken."""
    cs = ConfigStore.instance()
    original = cs.store
    current = {"file": "?"}

    def store(name, node, group=None, package=None, provider=None):
        if group == "experiment":
            key = name[: -len(".yaml")] if name.endswith(".yaml") else name
            if origins.get(key, current["file"]) != current["file"]:
                raise DuplicateExperimentError(
                    f"experiment {key!r} is defined in both {origins[key]} and {current['file']}: rename one "
                    "(the later file would silently replace the other)"
                )
            origins[key] = current["file"]
        return original(name=name, node=node, group=group, package=package, provider=provider)

    cs.store = store
    try:
        yield current
    finally:
        del cs.store  # back to the class's method


def make_config() -> dict:
    register_all()
    return base_config()
