"""Lazy configs (`L`, `LazyDict`, `instantiate`), the Hydra ConfigStore groups and the experiments."""

from cosmos_predict2.configs.lazy import L, LazyCall, LazyDict, instantiate, locate

__all__ = ["L", "LazyCall", "LazyDict", "instantiate", "locate"]
