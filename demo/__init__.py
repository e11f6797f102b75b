"""The CPU demo of issue 6: synthetic videos, the tiny pretrained base model and VAE, and the end-to-end LoRA run.

Not part of the installed library (a top-level package beside scripts/, importable from the repository root):
it needs the repository's assets/demo/ and runs the repository's scripts.

    make demo                      # = python -m scripts.demo (after the install)
    python -m scripts.make_demo_assets   # re-create assets/demo/ (tiny VAE, tiny DiT, tiny T5) deterministically

Modules:
    synthetic  the two synthetic domains (broad "shapes" pretraining set, the "sks teal robot" LoRA domain), mp4 IO
    images     contact sheet and loss-curve PNGs (Pillow only), PSNR
    assets     pretraining of the tiny VAE and the tiny DiT (make_demo_assets)
    run        the demo driver (scripts.demo)
    tiny_t5    a tiny random T5 encoder + tokenizer (assets/demo/tiny_t5, tests)
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSETS_DIR = REPO_ROOT / "assets" / "demo"
DIT_PATH = ASSETS_DIR / "tiny_dit.safetensors"  # diffusers-format weights of the "tiny" MinimalV1LVGDiT
VAE_DIR = ASSETS_DIR / "tiny_vae"  # diffusers AutoencoderKLWan folder (config.json + safetensors)
T5_DIR = ASSETS_DIR / "tiny_t5"  # tiny random T5 encoder + tokenizer (d_model 32)

# One geometry for everything: 64x64 pixels, 17 frames (4k+1) at 16 fps -> latents [16, 5, 8, 8].
HEIGHT, WIDTH, NUM_FRAMES, FPS = 64, 64, 17, 16
T5_DIM = 32  # crossattn_emb_channels of the "tiny" network size
ROBOT_PROMPT = "A video of sks teal robot."  # the guide's cosmos-nemo-assets prompt
