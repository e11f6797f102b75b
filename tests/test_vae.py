"""Wan VAE tokenizer: normalisation, frame-count checks, .pth loading with original Wan key names."""

import pytest
import torch

from cosmos_predict2.tokenizers import (
    LATENTS_MEAN,
    LATENTS_STD,
    VAEKeyError,
    WanVAETokenizer,
    convert_wan_state_dict,
    latent_frames,
    tiny_vae_config,
)
from testing_support.wan_keys import diffusers_state_dict_to_wan


@pytest.fixture(scope="module")
def tok():
    return WanVAETokenizer.from_config(tiny_vae_config(), device="cpu")


def test_encode_decode_shapes_and_normalisation(tok):
    video_B_3_T_H_W = torch.randint(0, 256, (1, 3, 9, 32, 48), dtype=torch.uint8)
    z = tok.encode(video_B_3_T_H_W)
    assert z.shape == (1, 16, 3, 4, 6) and z.dtype == torch.float32
    mu = tok.vae.encode(video_B_3_T_H_W.float() / 127.5 - 1).latent_dist.mean
    expected = (mu - torch.tensor(LATENTS_MEAN).view(1, -1, 1, 1, 1)) / torch.tensor(LATENTS_STD).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(z, expected)
    # Float input in [-1, 1] gives the same latents as the equivalent uint8 input.
    torch.testing.assert_close(tok.encode(video_B_3_T_H_W.float() / 127.5 - 1), z)
    x = tok.decode(z)
    assert x.shape == (1, 3, 9, 32, 48) and x.min() >= -1 and x.max() <= 1


def test_frame_counts(tok):
    assert latent_frames(93) == 24 and latent_frames(61) == 16 and latent_frames(1) == 1
    with pytest.raises(ValueError, match="4k\\+1.*got 8.*use 5 or 9"):
        tok.encode(torch.zeros(1, 3, 8, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiples of 8"):
        tok.encode(torch.zeros(1, 3, 5, 12, 16, dtype=torch.uint8))


def test_tiled_encode_runs(tok):
    tiled = WanVAETokenizer(
        tok.vae,
        device="cpu",
        tiled={
            "tile_sample_min_height": 32,
            "tile_sample_min_width": 32,
            "tile_sample_stride_height": 16,
            "tile_sample_stride_width": 16,
        },  # fmt: skip
    )
    z = tiled.encode(torch.randint(0, 256, (1, 3, 5, 64, 64), dtype=torch.uint8))
    assert z.shape == (1, 16, 2, 8, 8) and torch.isfinite(z).all()
    tok.vae.disable_tiling()


def test_key_mapping_roundtrip_default_config():
    from diffusers import AutoencoderKLWan

    sd = AutoencoderKLWan(base_dim=8).state_dict()  # default layout (num_res_blocks 2) = the released VAE's
    orig = diffusers_state_dict_to_wan(sd)
    # Spot-check names against the original Wan2.1 layout.
    for name in ("encoder.conv1.weight", "conv1.weight", "conv2.bias", "encoder.middle.1.to_qkv.weight",
                 "decoder.middle.2.residual.6.weight", "decoder.upsamples.3.time_conv.weight",
                 "decoder.upsamples.4.shortcut.weight", "decoder.head.2.weight", "encoder.head.0.gamma"):  # fmt: skip
        assert name in orig, name
    assert set(convert_wan_state_dict(orig)) == set(sd)


def test_pth_roundtrip_gives_identical_outputs(tok, tmp_path):
    cfg = tiny_vae_config()
    orig = diffusers_state_dict_to_wan(tok.vae.state_dict(), cfg["num_res_blocks"])
    torch.save(orig, tmp_path / "tokenizer.pth")
    loaded = WanVAETokenizer.from_pretrained(tmp_path / "tokenizer.pth", config=cfg, device="cpu")
    assert loaded.identity == tok.identity
    video = torch.randint(0, 256, (1, 3, 5, 16, 16), dtype=torch.uint8)
    z = tok.encode(video)
    assert torch.equal(loaded.encode(video), z)
    assert torch.equal(loaded.decode(z), tok.decode(z))
    # diffusers-format folder
    tok.vae.save_pretrained(tmp_path / "vae_folder")
    folder = WanVAETokenizer.from_pretrained(tmp_path / "vae_folder", device="cpu")
    assert torch.equal(folder.encode(video), z)


def test_pth_unknown_and_missing_keys(tok, tmp_path):
    cfg = tiny_vae_config()
    orig = diffusers_state_dict_to_wan(tok.vae.state_dict(), cfg["num_res_blocks"])
    bad = dict(orig, **{"encoder.something_new.weight": torch.zeros(1)})
    torch.save(bad, tmp_path / "unknown.pth")
    with pytest.raises(VAEKeyError, match="unknown.pth.*encoder.something_new.weight"):
        WanVAETokenizer.from_pretrained(tmp_path / "unknown.pth", config=cfg, device="cpu")
    missing = dict(orig)
    del missing["decoder.head.2.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(VAEKeyError, match="missing.pth.*missing.*decoder.conv_out.weight"):
        WanVAETokenizer.from_pretrained(tmp_path / "missing.pth", config=cfg, device="cpu")
    with pytest.raises(FileNotFoundError, match="tokenizer.pth"):
        WanVAETokenizer.from_pretrained(tmp_path / "nope.pth")
