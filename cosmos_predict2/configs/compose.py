"""Compose the training config from a config file and command-line overrides (Hydra ConfigStore + compose API).

    cfg = compose_config("cosmos_predict2/configs/base/config.py", ["experiment=NAME", "trainer.max_iter=10"])

Unknown experiments, groups and keys raise `ConfigError` listing the closest valid names.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

ROOT_NAME = "cosmos_predict2_training_config"


class ConfigError(ValueError):
    """A config file, experiment name or override that cannot be used; the message says what would work."""


def load_config_module(config_file: str) -> Any:
    """Import the config file (e.g. cosmos_predict2/configs/base/config.py) and return its module."""
    path = Path(config_file)
    if not path.is_file():
        raise ConfigError(f"--config={config_file}: no such file (e.g. cosmos_predict2/configs/base/config.py)")
    try:  # import by package name when the file lies under the working directory, so relative imports work
        module_name = ".".join(path.resolve().relative_to(Path.cwd().resolve()).with_suffix("").parts)
        return importlib.import_module(module_name)
    except (ValueError, ModuleNotFoundError):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module


def group_options(group: str) -> list[str]:
    try:
        return sorted(name[: -len(".yaml")] if name.endswith(".yaml") else name
                      for name in ConfigStore.instance().list(group))  # fmt: skip
    except OSError:
        return []


def _close(word: str, options: list[str], n: int = 5) -> str:
    matches = difflib.get_close_matches(word, options, n=n, cutoff=0.4)
    if not matches:  # substring matches help for long experiment names
        matches = [o for o in options if word.lower() in o.lower()][:n]
    return ", ".join(matches) if matches else "none"


def _flatten_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            keys.append(path)
            keys.extend(_flatten_keys(v, path))
    return keys


def _split_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _quote_commas(override: str) -> str:
    """Hydra reads `a=x,y` as a multirun sweep, which a training run cannot be; a comma-separated value such as
    `model.config.lora_target_modules=q_proj,k_proj` is meant as one string, so quote it."""
    key, value = override.split("=", 1)
    if "," in value and not value.startswith(("[", "{", "'", '"')) and "\\," not in value:
        return f"{key}='{value}'"
    return override


def _compose(overrides: list[str]) -> DictConfig:
    with initialize(version_base=None, config_path=None):
        return compose(config_name=ROOT_NAME, overrides=overrides)


def compose_config(config_file: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The resolved config of `config_file` (its `make_config()`) with Hydra `overrides` applied."""
    module = load_config_module(config_file)
    if not hasattr(module, "make_config"):
        raise ConfigError(f"--config={config_file} defines no make_config()")
    ConfigStore.instance().store(name=ROOT_NAME, node=module.make_config())
    overrides = list(overrides)
    groups = {"experiment", "model", "optimizer", "scheduler", "ckpt_type", "callbacks", "dataloader_val"}
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not of the form key=value (e.g. trainer.max_iter=100)")
        key, value = _split_override(override)
        if key in groups:
            options = group_options(key)
            if value not in options and value not in ("null", ""):
                raise ConfigError(f"unknown {key} {value!r}; closest: {_close(value, options)}. "
                                  f"Available: {', '.join(options)}")  # fmt: skip
    overrides = [_quote_commas(o) for o in overrides]
    try:
        cfg = _compose(overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise _explain(e, overrides) from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def _explain(error: Exception, overrides: list[str]) -> ConfigError:
    """Turn Hydra's 'Could not override x' into a message that lists the closest existing keys."""
    message = str(error)
    group_overrides = [o for o in overrides if _split_override(o)[0] in
                       {"experiment", "model", "optimizer", "scheduler", "ckpt_type", "callbacks", "dataloader_val"}]
    try:
        keys = _flatten_keys(OmegaConf.to_container(_compose(group_overrides), resolve=False))
    except Exception:
        keys = []
    for override in overrides:
        key, _ = _split_override(override)
        if key in message or f"'{key}'" in message:
            if keys and key not in keys:
                return ConfigError(f"unknown config key {key!r} in override {override!r}; closest: "
                                   f"{_close(key, keys)}. (Use +{key}=... to add a new key on purpose.)")  # fmt: skip
            return ConfigError(f"cannot apply override {override!r}: {message.splitlines()[0]}")
    return ConfigError(f"config composition failed: {message}")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


__all__ = ["ConfigError", "compose_config", "group_options", "load_config_module", "to_yaml"]
