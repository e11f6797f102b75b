"""diffusers AutoencoderKLWan key names -> the original Wan2.1 VAE names: the inverse of
cosmos_predict2.tokenizers.wan_keys, used only to write test files in the release's naming (the library reads
`tokenizer.pth`, it never writes one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

# The forward tables themselves, so that the inverse cannot drift from what the library reads.
from cosmos_predict2.tokenizers.wan_keys import (
    _FIXED_ORIG_TO_DIFFUSERS,
    _RESBLOCK_ORIG_TO_DIFFUSERS,
    VAEKeyError,
    wan_key_to_diffusers,
)


def diffusers_state_dict_to_wan(
    state_dict: Mapping[str, torch.Tensor], num_res_blocks: int = 2
) -> dict[str, torch.Tensor]:
    """Inverse of convert_wan_state_dict; raises VAEKeyError for a key with no Wan2.1 name."""
    # Build the inverse from the forward map over candidate original names, so the two can never disagree.
    inverse = {}
    for key in state_dict:
        orig = _diffusers_key_to_wan(key, num_res_blocks)
        if orig is None or wan_key_to_diffusers(orig, num_res_blocks) != key:
            raise VAEKeyError(f"diffusers VAE key {key!r} has no Wan2.1 name")
        inverse[orig] = state_dict[key]
    return inverse


def _diffusers_key_to_wan(key: str, num_res_blocks: int) -> str | None:
    for old, new in _FIXED_ORIG_TO_DIFFUSERS.items():
        if key.startswith(new):
            return old + key[len(new) :]
    res_inv = {v: k for k, v in _RESBLOCK_ORIG_TO_DIFFUSERS.items()}

    def res(rest: str) -> str | None:
        return next((res_inv[n] + rest[len(n) :] for n in res_inv if rest.startswith(n)), None)

    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", key):
        rest = m.group(2)
        mapped = rest if rest.startswith(("resample.", "time_conv.")) else res(rest)
        return None if mapped is None else f"encoder.downsamples.{m.group(1)}.{mapped}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{m.group(1)}.middle.1.{m.group(2)}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)", key):
        mapped = res(m.group(3))
        return None if mapped is None else f"{m.group(1)}.middle.{2 * int(m.group(2))}.{mapped}"
    per_level = num_res_blocks + 2
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        return f"decoder.upsamples.{int(m.group(1)) * per_level + per_level - 1}.{m.group(2)}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        mapped = res(m.group(3))
        idx = int(m.group(1)) * per_level + int(m.group(2))
        return None if mapped is None else f"decoder.upsamples.{idx}.{mapped}"
    return None
