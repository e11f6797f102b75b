"""Running diffusers' CosmosTransformer3DModel (our reference peer) without torchvision.

diffusers resizes the padding mask with `torchvision.transforms.functional.resize(..., NEAREST)`; torchvision is not
a dependency of ours. Its tensor NEAREST path is `F.interpolate(mode="nearest")`, so we install exactly that when
torchvision is absent.
"""

from __future__ import annotations

import importlib.util
import types

import torch.nn.functional as F


def _resize(img, size, interpolation=None):
    return F.interpolate(img, size=tuple(size), mode="nearest")


NEAREST_RESIZE_SHIM = types.SimpleNamespace(
    functional=types.SimpleNamespace(resize=_resize),
    InterpolationMode=types.SimpleNamespace(NEAREST="nearest"),
)


def ensure_cosmos_padding_resize() -> None:
    """Give diffusers' Cosmos transformer module a `transforms` object if torchvision is missing."""
    import diffusers.models.transformers.transformer_cosmos as tc

    if getattr(tc, "transforms", None) is None and importlib.util.find_spec("torchvision") is None:
        tc.transforms = NEAREST_RESIZE_SHIM
