"""Rectified-flow formulation (training loss, denoiser) and the sampler."""
