"""The Wan2.1 VAE tokenizer (diffusers AutoencoderKLWan) with Cosmos latent normalisation (docs/reference.md §3)."""

from cosmos_predict2.tokenizers.wan_keys import VAEKeyError, convert_wan_state_dict
from cosmos_predict2.tokenizers.wan_vae import (
    DEFAULT_TOKENIZER_PATH,
    LATENTS_MEAN,
    LATENTS_STD,
    WanVAETokenizer,
    check_frame_count,
    latent_frames,
    state_dict_identity,
    tiny_vae_config,
)

__all__ = [
    "DEFAULT_TOKENIZER_PATH",
    "LATENTS_MEAN",
    "LATENTS_STD",
    "VAEKeyError",
    "WanVAETokenizer",
    "check_frame_count",
    "convert_wan_state_dict",
    "latent_frames",
    "state_dict_identity",
    "tiny_vae_config",
]
