"""Key names of the original Wan2.1 VAE (`tokenizer.pth`) -> diffusers' AutoencoderKLWan.

Original layout (Wan2.1 `vae.py`): encoder.conv1, encoder.downsamples.<i> (residual blocks and resamplers in one
flat list, same as diffusers' encoder.down_blocks.<i>), encoder.middle.{0,1,2} (resblock, attention, resblock),
encoder.head.{0: norm, 2: conv}; top-level conv1/conv2 (quant convs); decoder.conv1, decoder.middle,
decoder.upsamples.<i> (flat: per level `num_res_blocks + 1` resblocks then one upsampler, none after the last),
decoder.head. A residual block is `residual.{0: norm, 2: conv, 3: norm, 6: conv}` plus `shortcut`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_RESBLOCK_ORIG_TO_DIFFUSERS = {
    "residual.0.": "norm1.",
    "residual.2.": "conv1.",
    "residual.3.": "norm2.",
    "residual.6.": "conv2.",
    "shortcut.": "conv_shortcut.",
}
_FIXED_ORIG_TO_DIFFUSERS = {
    "conv1.": "quant_conv.",
    "conv2.": "post_quant_conv.",
    "encoder.conv1.": "encoder.conv_in.",
    "decoder.conv1.": "decoder.conv_in.",
    "encoder.head.0.": "encoder.norm_out.",
    "encoder.head.2.": "encoder.conv_out.",
    "decoder.head.0.": "decoder.norm_out.",
    "decoder.head.2.": "decoder.conv_out.",
}


class VAEKeyError(KeyError):
    """A state-dict key has no counterpart in the other naming scheme."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def _resblock_orig_to_diffusers(rest: str) -> str | None:
    for old, new in _RESBLOCK_ORIG_TO_DIFFUSERS.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    return None


def _middle_orig_to_diffusers(side: str, idx: int, rest: str) -> str | None:
    if idx == 1:  # attention block keeps its parameter names (norm, to_qkv, proj)
        return f"{side}.mid_block.attentions.0.{rest}"
    mapped = _resblock_orig_to_diffusers(rest)
    return None if mapped is None or idx not in (0, 2) else f"{side}.mid_block.resnets.{idx // 2}.{mapped}"


def _upsample_orig_to_diffusers(idx: int, rest: str, num_res_blocks: int) -> str | None:
    per_level = num_res_blocks + 2  # num_res_blocks + 1 resblocks, then one upsampler
    level, pos = divmod(idx, per_level)
    if pos == per_level - 1:
        return f"decoder.up_blocks.{level}.upsamplers.0.{rest}"
    mapped = _resblock_orig_to_diffusers(rest)
    return None if mapped is None else f"decoder.up_blocks.{level}.resnets.{pos}.{mapped}"


def wan_key_to_diffusers(key: str, num_res_blocks: int = 2) -> str | None:
    """Diffusers name for an original Wan VAE key, or None when the key has no known mapping."""
    for old, new in _FIXED_ORIG_TO_DIFFUSERS.items():
        if key.startswith(old) and key.count(".") == old.count("."):
            return new + key[len(old) :]
    if m := re.fullmatch(r"encoder\.downsamples\.(\d+)\.(.+)", key):
        rest = m.group(2)
        if rest.startswith(("resample.", "time_conv.")):
            return f"encoder.down_blocks.{m.group(1)}.{rest}"
        mapped = _resblock_orig_to_diffusers(rest)
        return None if mapped is None else f"encoder.down_blocks.{m.group(1)}.{mapped}"
    if m := re.fullmatch(r"(encoder|decoder)\.middle\.(\d+)\.(.+)", key):
        return _middle_orig_to_diffusers(m.group(1), int(m.group(2)), m.group(3))
    if m := re.fullmatch(r"decoder\.upsamples\.(\d+)\.(.+)", key):
        return _upsample_orig_to_diffusers(int(m.group(1)), m.group(2), num_res_blocks)
    return None


def convert_wan_state_dict(
    state_dict: Mapping[str, torch.Tensor], num_res_blocks: int = 2, source: str = "state dict"
) -> dict[str, torch.Tensor]:
    """Rename an original Wan VAE state dict to diffusers names; raises VAEKeyError listing unknown keys."""
    out, unknown = {}, []
    for key, value in state_dict.items():
        new_key = wan_key_to_diffusers(key, num_res_blocks)
        if new_key is None:
            unknown.append(key)
        else:
            out[new_key] = value
    if unknown:
        raise VAEKeyError(
            f"{source}: {len(unknown)} key(s) are not Wan2.1 VAE weights: {unknown[:8]}"
            f"{' ...' if len(unknown) > 8 else ''}. Is this the Cosmos-Predict2 tokenizer/tokenizer.pth?"
        )
    return out

