"""Experiment modules. Every module in this package is imported by `configs.base.config.import_experiments` and
registers its experiment dicts with `register_experiments` (or the guide's ConfigStore loop)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore


def register_experiments(namespace: dict, *items: dict) -> list[str]:
    """Store each experiment dict under the (lower-cased) name of the module-level variable that holds it,
    in group "experiment", package "_global_" (the guide's registration loop)."""
    cs = ConfigStore.instance()
    names = []
    for item in items:
        matches = [name.lower() for name, value in namespace.items() if value is item]
        if not matches:
            raise ValueError("register_experiments: pass experiments that are module-level variables")
        cs.store(group="experiment", package="_global_", name=matches[0], node=item)
        names.append(matches[0])
    return names
