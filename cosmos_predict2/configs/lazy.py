"""Lazy configs: `L(callable)(**kwargs)` records a call without making it; `instantiate` makes it later.

A lazy node is a plain dict `{"_target_": "package.module.name", **kwargs}`, so whole configs stay
OmegaConf/Hydra-compatible (OmegaConf accepts only exact dicts/lists: they can be stored in the ConfigStore with the
guide's `cs.store(...)` loop, overridden from the command line and written to `config.yaml`), and `instantiate`
turns them into objects, depth first. `LazyDict` is the attribute-access dict that `instantiate` returns for
plain (non-lazy) sections, e.g. `instantiate(cfg.trainer).max_iter`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

TARGET_KEY = "_target_"
RECURSIVE_KEY = "_recursive_"
ARGS_KEY = "_args_"  # positional arguments, as in Hydra's instantiate: L(ConcatDataset)([a, b])


class LazyDict(dict):
    """A dict with attribute access (`cfg.model.config.lora_rank`), used for lazy nodes and config sections."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


def target_path(target: Callable | str) -> str:
    """'package.module.QualName' for a class or function, so that the node holds only plain data."""
    if isinstance(target, str):
        return target
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise TypeError(f"L() needs an importable class or function, got {target!r} (lambdas/locals cannot be stored)")
    return f"{module}.{qualname}"


def locate(path: str) -> Any:
    """Import 'a.b.C' (also nested attributes 'a.b.C.method') with an error that names the missing part."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError as e:
            raise ImportError(f"cannot locate {path!r}: {e}") from e
        return obj
    raise ImportError(f"cannot locate {path!r}: no importable module prefix")


def _plain(value: Any) -> Any:
    """Tuples -> lists, dataclasses and dict subclasses -> dicts, recursively: what OmegaConf can hold."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


class LazyCall:
    """`LazyCall(Dataset)(dataset_dir=..., num_frames=93)` -> {"_target_": "cosmos_predict2.data...Dataset", ...}.
    Positional arguments are kept under `_args_` (the guide writes `L(ConcatDataset)([dataset_a, dataset_b])`)."""

    def __init__(self, target: Callable | str) -> None:
        self._target = target_path(target)

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        node = {TARGET_KEY: self._target, **{k: _plain(v) for k, v in kwargs.items()}}
        if args:
            node[ARGS_KEY] = [_plain(a) for a in args]
        return node


L = LazyCall


def _to_container(cfg: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return cfg
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def is_lazy(node: Any) -> bool:
    return isinstance(node, Mapping) and TARGET_KEY in node


def instantiate(cfg: Any, **overrides: Any) -> Any:
    """Build the object a lazy node describes. Children are instantiated first unless `_recursive_: False`;
    `overrides` replace (or add) top-level keyword arguments, e.g. `instantiate(cfg.optimizer, params=...)`.
    Non-lazy dicts and lists are returned with their lazy children instantiated."""
    cfg = _to_container(cfg)
    if isinstance(cfg, Mapping) and not is_lazy(cfg):
        return LazyDict({k: instantiate(v) for k, v in cfg.items()})
    if isinstance(cfg, Sequence) and not isinstance(cfg, (str, bytes)):
        return [instantiate(v) for v in cfg]
    if not is_lazy(cfg):
        return cfg
    # Overridden arguments are not built from the config at all (e.g. a sampler's `dataset` given as an object).
    kwargs = {k: v for k, v in cfg.items() if k not in (TARGET_KEY, RECURSIVE_KEY, ARGS_KEY) and k not in overrides}
    args = list(cfg.get(ARGS_KEY) or [])
    recursive = cfg.get(RECURSIVE_KEY, True)
    if recursive:
        kwargs = {k: instantiate(v) for k, v in kwargs.items()}
        args = [instantiate(a) for a in args]
    kwargs.update(overrides)
    target = cfg[TARGET_KEY]
    fn = locate(target) if isinstance(target, str) else target
    if not callable(fn):
        raise TypeError(f"_target_ {target!r} is not callable")
    try:
        return fn(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"instantiating {target}: {e}") from e


__all__ = ["L", "LazyCall", "LazyDict", "instantiate", "is_lazy", "locate", "target_path"]
