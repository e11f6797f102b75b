"""Tiny models and inputs for the inference tests (imported by test_inference*.py and test_examples*.py).

Everything is random and small: a 2-block DiT with 32-wide cross-attention, a 32-wide T5 with its tokenizer,
a small Wan VAE saved as a diffusers folder, and synthetic images/videos. No test lives here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from cosmos_predict2.data.video import write_video
from cosmos_predict2.lora import LoraSpec, adapter_checkpoint, add_lora, lora_state_dict
from cosmos_predict2.networks import build_net
from cosmos_predict2.networks.weights import randomize_

EMB_DIM = 32  # tiny net crossattn width = tiny T5 d_model
NUM_FRAMES = 9  # 3 latent frames
SIZE = "64x32"  # W x H
SIZE_HW = (32, 64)


@dataclass
class Assets:
    root: Path
    t5: Path
    vae: Path
    dit: Path
    adapter: Path  # our adapter checkpoint (trained-looking: lora_B != 0)
    adapter_zero_b: Path  # our adapter checkpoint with lora_B = 0 (fresh init)
    reference_lora: Path  # reference-format full checkpoint (base_layer + lora_A/B.default)
    image: Path
    video: Path  # 12 frames
    short_video: Path  # 3 frames


def tiny_net(seed: int = 1):
    return randomize_(build_net("tiny", crossattn_emb_channels=EMB_DIM), seed=seed).eval()


def frames(num_frames: int, height: int = 40, width: int = 72, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, height, width, 3), dtype=np.uint8)
    out = np.repeat(base, num_frames, axis=0)
    for t in range(num_frames):
        out[t, :, : 8 + 4 * t] = (20 * t) % 255  # a moving band so frames differ
    return out


def make_assets(root: Path) -> Assets:
    from diffusers import AutoencoderKLWan
    from PIL import Image

    from cosmos_predict2.tokenizers import tiny_vae_config
    from demo.tiny_t5 import make_tiny_t5

    root.mkdir(parents=True, exist_ok=True)
    t5 = make_tiny_t5(root / "t5", d_model=EMB_DIM)
    torch.manual_seed(0)
    vae = root / "vae"
    AutoencoderKLWan(**tiny_vae_config()).save_pretrained(str(vae))

    net = tiny_net()
    dit = root / "base.pt"
    torch.save({"net." + k: v for k, v in net.state_dict().items()}, dit)

    spec = LoraSpec(rank=4, alpha=8, target_modules="q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2")
    add_lora(net, spec)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    base_info = {"model_size": "tiny", "dit_path": str(dit), "sha256": None,
                 "net_config": {**build_net_kwargs()}}
    lora_sd = lora_state_dict(net)
    adapter = root / "adapter.pt"
    torch.save(adapter_checkpoint(lora_sd, spec, base_info), adapter)
    zero_b = {k: (torch.zeros_like(v) if ".lora_B." in k else v) for k, v in lora_sd.items()}
    adapter_zero_b = root / "adapter_zero_b.pt"
    torch.save(adapter_checkpoint(zero_b, spec, base_info), adapter_zero_b)
    reference_lora = root / "reference_lora.pt"
    torch.save({"net." + k: v for k, v in net.state_dict().items()}, reference_lora)

    image = root / "input.png"
    Image.fromarray(frames(1)[0]).save(image)
    video = root / "input.mp4"
    write_video(video, frames(12), fps=16)
    short_video = root / "short.mp4"
    write_video(short_video, frames(3), fps=16)
    return Assets(root, t5, vae, dit, adapter, adapter_zero_b, reference_lora, image, video, short_video)


def build_net_kwargs() -> dict:
    from cosmos_predict2.networks import net_config

    return net_config("tiny", crossattn_emb_channels=EMB_DIM)


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Assets:
    return make_assets(tmp_path_factory.mktemp("inference_assets"))


def common_argv(a: Assets, out: Path, *extra: str) -> list[str]:
    return [
        "--model_size", "tiny", "--dit_path", str(a.dit), "--tokenizer_path", str(a.vae), "--t5_path", str(a.t5),
        "--size", SIZE, "--num_frames", str(NUM_FRAMES), "--num_steps", "3", "--input_path", str(a.image),
        "--prompt", "a robot", "--save_path", str(out), "--disable_guardrail", "--disable_prompt_refiner",
        "--device", "cpu", *extra,
    ]
