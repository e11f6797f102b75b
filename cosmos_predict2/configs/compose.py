"""Compose the training config from a config file and command-line overrides (Hydra ConfigStore + compose API).

    cfg = compose_config("cosmos_predict2/configs/base/config.py", ["experiment=NAME", "trainer.max_iter=10"])

Unknown experiments, groups and keys raise `ConfigError` listing the closest valid names. After composition, and
before anything is built, `check_config` checks the values: each overridden key has the type of its default (an
int stays an int, a list a list), `model.config` passes its schema (`configs/model_config.py`), and every
Video2World dataset node has 4k+1 frames and an [H, W] size in multiples of 16.

An argument of a lazy node's target that the composed tree does not carry yet (e.g. `on_invalid` of the dataset:
`dataloader_train.dataset.on_invalid=skip`) can be set without Hydra's `+` prefix.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import Container, DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from cosmos_predict2.configs.model_config import type_problem

ROOT_NAME = "cosmos_predict2_training_config"
GROUPS = frozenset({"experiment", "model", "optimizer", "scheduler", "ckpt_type", "callbacks", "dataloader_val"})
TARGET_KEY = "_target_"
VIDEO_DATASETS = ("cosmos_predict2.data.dataset.Dataset", "cosmos_predict2.data.latent_cache.CachedLatentDataset")
POSITIVE_INTEGERS = ("trainer.max_iter", "trainer.logging_iter", "checkpoint.save_iter", "dataloader_train.batch_size",
                     "trainer.validation_iter", "trainer.validation.num_sigmas")  # fmt: skip
BEST_METRICS = ("val/loss", "val/psnr", "val/ssim")
SPATIAL_MULTIPLE = 16  # VAE 8x8 compression x DiT patch 2x2 (docs/reference.md §1)


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
    """The resolved config of `config_file` (its `make_config()`) with Hydra `overrides` applied and checked."""
    module = load_config_module(config_file)
    if not hasattr(module, "make_config"):
        raise ConfigError(f"--config={config_file} defines no make_config()")
    ConfigStore.instance().store(name=ROOT_NAME, node=module.make_config())
    overrides = list(overrides)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not of the form key=value (e.g. trainer.max_iter=100)")
        key, value = _split_override(override)
        if key in GROUPS:
            options = group_options(key)
            if value not in options and value not in ("null", ""):
                raise ConfigError(f"unknown {key} {value!r}; closest: {_close(value, options)}. "
                                  f"Available: {', '.join(options)}")  # fmt: skip
    overrides = [_quote_commas(o) for o in overrides]
    base = None
    try:
        cfg = _compose(overrides)
    except (HydraException, OmegaConfBaseException) as e:
        base = _group_tree(overrides)
        added = _add_target_arguments(overrides, base)
        if added == overrides:
            raise _explain(e, overrides, base) from None
        overrides = added
        try:
            cfg = _compose(overrides)
        except (HydraException, OmegaConfBaseException) as e2:
            raise _explain(e2, overrides, base) from None
    if any(_split_override(o)[0] not in GROUPS for o in overrides):
        check_overrides(cfg, overrides, base if base is not None else _group_tree(overrides))
    move_guide_model_keys(cfg)
    check_config(cfg)
    OmegaConf.set_struct(cfg, True)
    return cfg


# The guide's domain snippets (section 5) write these inside model.config; the trainer and the optimizer read them
# from trainer.max_iter and optimizer.lr.
GUIDE_MODEL_KEYS = {"max_iter": "trainer.max_iter", "lr": "optimizer.lr"}


def move_guide_model_keys(cfg: DictConfig) -> None:
    """Accept `model.config.max_iter` / `model.config.lr` as the guide writes them: move each where it takes
    effect, and say so once."""
    import logging

    model_config = OmegaConf.select(cfg, "model.config")
    if model_config is None:
        return
    for key, target in GUIDE_MODEL_KEYS.items():
        if key not in model_config:
            continue
        with open_dict(cfg):
            value = model_config.pop(key)
            OmegaConf.update(cfg, target, value, force_add=True)
        logging.getLogger("cosmos_predict2").warning(
            f"model.config.{key}={value} (as the guide writes it) is {target}: using {target}={value}")


def _is_group(override: str) -> bool:
    return _split_override(override)[0] in GROUPS


def _group_tree(overrides: list[str]) -> dict:
    """The tree the overrides apply to: the config with its group choices (experiment=...) only, unresolved."""
    try:
        return OmegaConf.to_container(_compose([o for o in overrides if _is_group(o)]), resolve=False)
    except Exception:
        return {}


def _select(tree: Any, key: str) -> tuple[bool, Any]:
    node = tree
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _target_parameters(node: Any) -> dict[str, inspect.Parameter]:
    """The keyword parameters of a lazy node's target, when its module is already imported (the config file
    imported it): composing must not import training/, networks/ or PEFT."""
    target = node.get(TARGET_KEY) if isinstance(node, dict) else None
    if not isinstance(target, str) or "." not in target:
        return {}
    module_name, _, name = target.rpartition(".")
    obj = getattr(sys.modules.get(module_name), name, None)
    if obj is None:
        return {}
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return {}
    return {k: p for k, p in params.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and k != "self"}  # fmt: skip


def _add_target_arguments(overrides: list[str], tree: dict) -> list[str]:
    """`a.b.key=v` -> `+a.b.key=v` where `a.b` is a lazy node whose target takes `key` and does not set it yet
    (docs/troubleshooting.md's `dataloader_train.dataset.on_invalid=skip`)."""
    result = []
    for override in overrides:
        key, _ = _split_override(override)
        parent, _, leaf = key.rpartition(".")
        if not override.startswith(("+", "~")) and parent and not _select(tree, key)[0]:
            found, node = _select(tree, parent)
            if found and leaf in _target_parameters(node):
                override = "+" + override
        result.append(override)
    return result


def _value_text(override: str) -> str:
    value = _split_override(override)[1].strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def check_overrides(cfg: DictConfig, overrides: list[str], tree: dict) -> None:
    """Each `key=value` override has the type of the value it replaces (or of the target argument's default):
    `trainer.max_iter=abc` is refused here, naming the key, instead of failing later in a traceback. A number given
    for a string key (`job.name=2024`) becomes that string."""
    for override in overrides:
        if override.startswith("~") or _is_group(override):
            continue
        key, _ = _split_override(override)
        found, default = _select(tree, key)
        if not found:  # an added key: typed by the target argument's default, if it has one
            parent, _, leaf = key.rpartition(".")
            param = _target_parameters(_select(tree, parent)[1]).get(leaf) if parent else None
            if param is None or param.default is inspect.Parameter.empty:
                continue
            default = param.default
        if isinstance(default, str) and default.startswith("${"):  # an interpolation: its type is unknown here
            continue
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if isinstance(value, Container):
            value = OmegaConf.to_container(value, resolve=True)
        if isinstance(default, str) and isinstance(value, (bool, int, float)):
            OmegaConf.update(cfg, key, _value_text(override), force_add=True)
            continue
        if isinstance(default, dict) and TARGET_KEY in default:  # a lazy node replaced by the user: their call
            continue
        kind = type_problem(value, default)
        if kind is not None:
            raise ConfigError(f"override {override!r}: {key} expects {kind} (default {default!r}), got {value!r}"
                              + (f" ({type(value).__name__})" if not isinstance(value, str) else ""))  # fmt: skip


def _walk(node: Any, prefix: str = ""):
    if isinstance(node, dict):
        yield prefix, node
        for k, v in node.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{prefix}.{i}")


def check_config(cfg: DictConfig) -> None:
    """Values that would fail only once the model or the data is built: `model.config` against its schema, and
    the frame count and size of every Video2World dataset node. Raises ConfigError naming the key."""
    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"config cannot be resolved: {str(e).splitlines()[0]}") from None
    model = tree.get("model")
    if isinstance(model, dict) and str(model.get(TARGET_KEY, "")).endswith(".Video2WorldModel") and "config" in model:
        from cosmos_predict2.configs.model_config import parse_model_config

        try:
            parse_model_config(model["config"])
        except (ValueError, TypeError) as e:
            raise ConfigError(str(e)) from None
    for key in POSITIVE_INTEGERS:
        found, value = _select(tree, key)
        if found and value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{key}={value!r}: expected a positive integer")
    for path, node in _walk(tree):
        _check_arguments(path, node)
        if node.get(TARGET_KEY) in VIDEO_DATASETS:
            _check_video_dataset(path, node)
    _check_validation(tree)


def _check_validation(tree: dict) -> None:
    """`trainer.run_validation` needs a validation set; the held-out fraction and the best metric must be usable."""
    trainer, val = tree.get("trainer") or {}, tree.get("dataloader_val") or {}
    if trainer.get("run_validation") and not (val.get("enabled") or val.get("dataset_dir")):
        raise ConfigError("trainer.run_validation=true needs a validation set: add dataloader_val=heldout (a held-out "
                          "part of the training folder) or dataloader_val.dataset_dir=DIR (a separate folder)")
    fraction = val.get("fraction")
    if val.get("enabled") and not val.get("dataset_dir") and not (isinstance(fraction, float) and 0 < fraction < 1):
        raise ConfigError(f"dataloader_val.fraction={fraction!r}: expected a number in (0, 1), the share of the "
                          "training folder held out for validation")  # fmt: skip
    metric = (trainer.get("validation") or {}).get("best_metric", BEST_METRICS[0])
    if metric not in BEST_METRICS:
        raise ConfigError(f"trainer.validation.best_metric={metric!r}: expected one of {', '.join(BEST_METRICS)}")


def _check_arguments(path: str, node: dict) -> None:
    """A lazy node whose (imported) target takes no such argument would fail with a TypeError when built."""
    params = _target_parameters(node)
    if not params or _takes_any_keyword(node):
        return
    for key in node:
        if key not in params and not (key.startswith("_") and key.endswith("_")):
            raise ConfigError(f"{path}.{key}: {node[TARGET_KEY]} takes no argument {key!r}; closest: "
                              f"{_close(key, list(params))}. Its arguments: {', '.join(params)}")  # fmt: skip


def _takes_any_keyword(node: dict) -> bool:
    module_name, _, name = node[TARGET_KEY].rpartition(".")
    try:
        params = inspect.signature(getattr(sys.modules[module_name], name)).parameters.values()
    except (KeyError, AttributeError, TypeError, ValueError):
        return True
    return any(p.kind is p.VAR_KEYWORD for p in params)


def _check_video_dataset(path: str, node: dict) -> None:
    from cosmos_predict2.data.validation import ON_INVALID_CHOICES
    from cosmos_predict2.data.video import RESIZE_MODES

    def fail(key: str, expected: str) -> None:
        raise ConfigError(f"{path}.{key}={node[key]!r}: expected {expected}")

    n = node.get("num_frames")
    if "num_frames" in node and (isinstance(n, bool) or not isinstance(n, int) or n < 1 or (n - 1) % 4):
        fail("num_frames", "a frame count 4k+1 (e.g. 93 for the released models, 61, 9): the VAE encodes 1 + 4k "
                           "frames")  # fmt: skip
    size = node.get("video_size")
    if "video_size" in node and not (
        isinstance(size, list) and len(size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % SPATIAL_MULTIPLE == 0 for v in size)
    ):  # fmt: skip
        fail("video_size", f"[H, W], two positive multiples of {SPATIAL_MULTIPLE} (e.g. [704, 1280] for 720p)")
    if node.get("on_invalid") is not None and node["on_invalid"] not in ON_INVALID_CHOICES:
        fail("on_invalid", f"one of {', '.join(ON_INVALID_CHOICES)}")
    if node.get("resize_mode") is not None and node["resize_mode"] not in RESIZE_MODES:
        fail("resize_mode", f"one of {', '.join(RESIZE_MODES)}")


def _explain(error: Exception, overrides: list[str], tree: dict | None = None) -> ConfigError:
    """Turn Hydra's 'Could not override x' into a message that lists the closest existing keys."""
    message = str(error)
    tree = _group_tree(overrides) if tree is None else tree
    keys = _flatten_keys(tree)
    keys += [f"{path}.{name}" for path, node in _walk(tree) for name in _target_parameters(node)
             if path and f"{path}.{name}" not in keys]  # fmt: skip
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


__all__ = ["ConfigError", "check_config", "check_overrides", "compose_config", "group_options", "load_config_module",
           "to_yaml"]
