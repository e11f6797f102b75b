"""Group `dataloader_val`: `mock` (no validation loader: post-training runs without validation, as the guide)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

MOCK = dict(enabled=False)


def register_dataloader_val() -> None:
    ConfigStore.instance().store(group="dataloader_val", package="dataloader_val", name="mock", node=MOCK)
