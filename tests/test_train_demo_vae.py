"""The demo VAE trainer (demo/vae_training.py, scripts/train_demo_vae): its unclamped decode is diffusers' decode
minus the clamp, a step-limited run is deterministic and writes loadable weights, and the clip pool mixes kinds."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import load_file

from cosmos_predict2.tokenizers import tiny_vae_config
from demo.assets import ROBOT_EVAL_SEED
from demo.run import HELDOUT_SEED, TRAIN_SEED
from demo.synthetic import robot_clip
from demo.vae_training import VAE_ROBOT_SEED, clip_pool, decode_unclamped, train_vae
from scripts import train_demo_vae


def test_unclamped_decode_matches_diffusers_decode_after_clamp():
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**tiny_vae_config()).eval()
    z = 3 * torch.randn(1, 16, 3, 4, 4)
    with torch.no_grad():
        ours = decode_unclamped(vae, z)
        theirs = vae.decode(z).sample
    assert ours.shape == theirs.shape == (1, 3, 9, 32, 32)
    torch.testing.assert_close(ours.clamp(-1, 1), theirs)


def test_clip_pool_mixes_shapes_and_robot_clips():
    pool = clip_pool(4, robot_fraction=0.5)
    assert pool.shape == (4, 3, 17, 64, 64) and pool.dtype == torch.uint8
    for i in (2, 3):  # the last half: robot clips of their own seed, never the demo's evaluation seed
        expected = torch.from_numpy(robot_clip(VAE_ROBOT_SEED, i).frames).permute(3, 0, 1, 2)
        assert torch.equal(pool[i], expected)
    assert VAE_ROBOT_SEED not in (ROBOT_EVAL_SEED, TRAIN_SEED, HELDOUT_SEED)


def test_step_limited_run_is_deterministic_and_script_writes_loadable_weights(tmp_path):
    a = train_vae(steps=2, pool=4, batch=1, save_path=tmp_path / "a.safetensors", log=lambda _: None)
    out = tmp_path / "vae.safetensors"
    assert train_demo_vae.main(["--out", str(out), "--steps", "2", "--pool", "4", "--batch", "1", "--workers", "1",
                                "--device", "cpu"]) == 0  # fmt: skip
    b = load_file(str(out))
    assert set(b) == set(a.state_dict())
    for k, v in a.state_dict().items():
        assert torch.equal(v, b[k]), k
    untrained = train_vae(steps=0, log=lambda _: None).state_dict()  # the same seeded initialisation
    assert any(not torch.equal(untrained[k], b[k]) for k in b)  # it did train
    loaded = train_vae(steps=0, init_from=out, log=lambda _: None)  # steps=0: only load
    assert all(torch.equal(v, b[k]) for k, v in loaded.state_dict().items())
