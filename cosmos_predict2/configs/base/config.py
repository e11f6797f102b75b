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

import importlib
import pkgutil

from cosmos_predict2.configs.base.defaults.callbacks import register_callbacks
from cosmos_predict2.configs.base.defaults.checkpoint import register_checkpoint
from cosmos_predict2.configs.base.defaults.data import register_dataloader_val
from cosmos_predict2.configs.base.defaults.model import register_model
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
    {"experiment": None},
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
    import_experiments()
    _REGISTERED = True


def import_experiments(package: str = "cosmos_predict2.configs.base.experiment") -> list[str]:
    """Import every module under `package` (recursively): each registers its experiments when imported, so a new
    file dropped into configs/base/experiment/ is picked up without editing any list."""
    pkg = importlib.import_module(package)
    names = []
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        importlib.import_module(info.name)
        names.append(info.name)
    return names


def make_config() -> dict:
    register_all()
    return base_config()
