"""Rectified flow in EDM notation (docs/reference.md §2): preconditioning, the conditioned denoiser and the loss.

x_sigma = x0 + sigma * eps, t = sigma / (1 + sigma); c_in = c_skip = 1 - t, c_out = -t, c_noise = t.
The network input is c_in * x_sigma = (1 - t) x0 + t eps and x0_hat = c_skip x_sigma + c_out F, so the
network F predicts the velocity v = eps - x0. Everything here is computed in fp32; only the network call
runs in the network's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

SIGMA_CONDITIONAL = 1e-4  # noise level of the clean conditioning frames as seen by the network's timestep


def sigma_to_t(sigma):
    return sigma / (1 + sigma)


def _bcast(v_B: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v_B.reshape(-1, *([1] * (like.ndim - 1)))


@dataclass
class Video2WorldCondition:
    """What the denoiser is conditioned on.

    crossattn_emb_B_L_D: text embedding (zeros when text is dropped or for the unconditional branch).
    gt_latents_B_C_T_H_W: clean latents; only the frames marked in the mask are used.
    condition_mask_B_1_T_H_W: 1 on conditioning latent frames, else 0 (None: no frame is given).
    """

    crossattn_emb_B_L_D: torch.Tensor
    gt_latents_B_C_T_H_W: torch.Tensor | None = None
    condition_mask_B_1_T_H_W: torch.Tensor | None = None
    fps: torch.Tensor | None = None
    padding_mask: torch.Tensor | None = None

    def with_text(self, crossattn_emb_B_L_D: torch.Tensor) -> Video2WorldCondition:
        return Video2WorldCondition(
            crossattn_emb_B_L_D, self.gt_latents_B_C_T_H_W, self.condition_mask_B_1_T_H_W, self.fps,
            self.padding_mask,
        )


def conditioning_mask(num_conditional_frames_B: torch.Tensor, shape_B_C_T_H_W: tuple) -> torch.Tensor:
    """[B, 1, T, H, W] mask with ones on the first n_b latent frames of sample b."""
    B, _, T, H, W = shape_B_C_T_H_W
    frames = torch.arange(T, device=num_conditional_frames_B.device)
    mask_B_T = (frames[None, :] < num_conditional_frames_B[:, None]).float()
    return mask_B_T[:, None, :, None, None].expand(B, 1, T, H, W).contiguous()


def denoise(
    net: nn.Module,
    x_sigma_B_C_T_H_W: torch.Tensor,
    sigma_B: torch.Tensor,
    condition: Video2WorldCondition,
    sigma_conditional: float = SIGMA_CONDITIONAL,
    shared_input_repeats: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (x0_hat, F) in fp32. Conditioning frames enter the network clean with t(sigma_conditional) and are
    copied into x0_hat unchanged (docs/reference.md §2, "Conditioning frames").

    shared_input_repeats=k: the batch is k copies of the same inputs that differ only in the text embedding (a
    guidance batch); passed to the network, which then computes its text-independent first layers once."""
    x_sigma = x_sigma_B_C_T_H_W.float()
    sigma = sigma_B.float().to(x_sigma.device)
    B, _, T = x_sigma.shape[:3]
    t_B = sigma / (1 + sigma)
    c_in = _bcast(1 - t_B, x_sigma)
    c_skip, c_out = c_in, _bcast(-t_B, x_sigma)
    net_in = c_in * x_sigma
    t_B_T = t_B[:, None].expand(B, T)
    mask = condition.condition_mask_B_1_T_H_W
    if mask is not None:
        mask = mask.float()
        gt = condition.gt_latents_B_C_T_H_W.float()
        net_in = mask * gt + (1 - mask) * net_in
        t_cond = sigma_conditional / (1 + sigma_conditional)
        t_B_T = torch.where(mask[:, 0, :, 0, 0] > 0.5, torch.full_like(t_B_T, t_cond), t_B_T)
    F_out = net(
        net_in,
        t_B_T,
        condition.crossattn_emb_B_L_D,
        mask,
        fps=condition.fps,
        padding_mask=condition.padding_mask,
        **({"shared_input_repeats": shared_input_repeats} if shared_input_repeats > 1 else {}),
    ).float()
    x0_hat = c_skip * x_sigma + c_out * F_out
    if mask is not None:
        x0_hat = mask * gt + (1 - mask) * x0_hat
    return x0_hat, F_out


def loss_weight(sigma_B: torch.Tensor) -> torch.Tensor:
    """EDM weight (1 + sigma)^2 / sigma^2, which turns ||x0 - x0_hat||^2 into ||F - v||^2."""
    return (1 + sigma_B) ** 2 / sigma_B**2


def video2world_loss(
    net: nn.Module,
    x0_B_C_T_H_W: torch.Tensor,
    sigma_B: torch.Tensor,
    eps_B_C_T_H_W: torch.Tensor,
    condition: Video2WorldCondition,
    loss_scale: float = 10.0,
    sigma_conditional: float = SIGMA_CONDITIONAL,
) -> tuple[torch.Tensor, dict]:
    """loss_scale * mean over B,C,T,H,W of w(sigma) (x0 - x0_hat)^2 in fp32 (docs/reference.md §2). Conditioning frames
    contribute exactly 0 but count in the mean, as in the reference."""
    x0 = x0_B_C_T_H_W.float()
    sigma = sigma_B.float()
    x_sigma = x0 + _bcast(sigma, x0) * eps_B_C_T_H_W.float()
    x0_hat, F_out = denoise(net, x_sigma, sigma, condition, sigma_conditional)
    per_element = _bcast(loss_weight(sigma), x0) * (x0 - x0_hat) ** 2
    loss = loss_scale * per_element.mean()
    return loss, {"x0_hat": x0_hat, "F": F_out, "x_sigma": x_sigma}


@dataclass
class SigmaSampler:
    """Training noise levels (docs/reference.md §2): log sigma ~ N(p_mean, p_std); videos scale sigma by sqrt(T_latent);
    with probability high_sigma_ratio, sigma is replaced by a log-uniform draw in [high_sigma_min, high_sigma_max]."""

    p_mean: float = 0.0
    p_std: float = 1.0
    video_noise_multiplier: bool = True
    high_sigma_ratio: float = 0.05
    high_sigma_min: float = 200.0
    high_sigma_max: float = 1e5

    def __call__(self, batch_size: int, num_latent_frames: int, generator: torch.Generator | None = None):
        log_sigma = self.p_mean + self.p_std * torch.randn(batch_size, generator=generator, dtype=torch.float64)
        sigma = log_sigma.exp()
        if self.video_noise_multiplier and num_latent_frames > 1:
            sigma = sigma * num_latent_frames**0.5
        if self.high_sigma_ratio > 0:
            u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
            lo, hi = math.log(self.high_sigma_min), math.log(self.high_sigma_max)
            log_high = lo + (hi - lo) * torch.rand(batch_size, generator=generator, dtype=torch.float64)
            sigma = torch.where(u < self.high_sigma_ratio, log_high.exp(), sigma)
        return sigma.float()
