"""Helpers for tests and benchmarks that the library itself never needs (not installed with the wheel):

    diffusers_compat  run diffusers' CosmosTransformer3DModel, the reference peer, without torchvision
    wan_keys          diffusers -> original Wan2.1 VAE key names, to write `tokenizer.pth`-style test files
"""
