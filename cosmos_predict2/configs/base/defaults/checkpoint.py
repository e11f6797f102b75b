"""Group `ckpt_type`: `standard` = local files in the guide's layout (training/checkpointer.py)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

STANDARD = dict(type="standard")


def register_checkpoint() -> None:
    ConfigStore.instance().store(group="ckpt_type", package="checkpoint", name="standard", node=STANDARD)
