"""scripts/train_demo_vae: its unclamped decode is diffusers' decode minus the clamp, and a short run writes weights."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import load_file

from cosmos_predict2.tokenizers import tiny_vae_config
from scripts import train_demo_vae


def test_unclamped_decode_matches_diffusers_decode_after_clamp():
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**tiny_vae_config()).eval()
    z = 3 * torch.randn(1, 16, 3, 4, 4)
    with torch.no_grad():
        ours = train_demo_vae.decode_unclamped(vae, z)
        theirs = vae.decode(z).sample
    assert ours.shape == theirs.shape == (1, 3, 9, 32, 32)
    torch.testing.assert_close(ours.clamp(-1, 1), theirs)


def test_short_run_writes_loadable_weights(tmp_path):
    out = tmp_path / "vae.safetensors"
    assert train_demo_vae.main(["--out", str(out), "--seconds", "1", "--pool", "4", "--batch", "1", "--workers", "1",
                                "--device", "cpu"]) == 0  # fmt: skip
    vae = AutoencoderKLWan(**tiny_vae_config())
    vae.load_state_dict(load_file(str(out)))
