"""The rectified-flow denoiser, loss and sigma sampling against the formulas of docs/reference.md §2."""

from __future__ import annotations

import math

import torch

from cosmos_predict2.diffusion.rectified_flow import (
    SIGMA_CONDITIONAL,
    SigmaSampler,
    Video2WorldCondition,
    conditioning_mask,
    denoise,
    video2world_loss,
)


class RecordingNet(torch.nn.Module):
    """A stand-in network with a known output, recording what it was called with."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x, t, emb, mask, fps=None, padding_mask=None):
        self.seen = (x.clone(), t.clone(), None if mask is None else mask.clone())
        return self.out


def test_loss_is_scaled_velocity_error_on_generated_frames():
    g = torch.Generator().manual_seed(0)
    B, C, T, H, W = 2, 16, 4, 3, 5
    x0, eps, F_out = (torch.randn(B, C, T, H, W, generator=g) for _ in range(3))
    sigma = torch.tensor([0.7, 13.0])
    mask = conditioning_mask(torch.tensor([1, 2]), x0.shape)
    net = RecordingNet(F_out)
    cond = Video2WorldCondition(torch.zeros(B, 5, 8), x0, mask)
    loss, out = video2world_loss(net, x0, sigma, eps, cond, loss_scale=10.0)
    v = eps - x0
    expected = 10 * (((F_out - v) ** 2) * (1 - mask)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)

    x_in, t_in, mask_in = net.seen
    t = sigma / (1 + sigma)
    # Generated frames: c_in * x_sigma = (1 - t) x0 + t eps; conditioning frames: clean x0.
    gen = (1 - t.view(B, 1, 1, 1, 1)) * x0 + t.view(B, 1, 1, 1, 1) * eps
    torch.testing.assert_close(x_in, mask * x0 + (1 - mask) * gen, rtol=1e-5, atol=1e-5)
    t_cond = SIGMA_CONDITIONAL / (1 + SIGMA_CONDITIONAL)
    assert torch.allclose(t_in[0], torch.tensor([t_cond, t[0], t[0], t[0]]))
    assert torch.allclose(t_in[1], torch.tensor([t_cond, t_cond, t[1], t[1]]))
    assert torch.equal(out["x0_hat"][1, :, :2], x0[1, :, :2])


def test_denoiser_is_exact_for_the_true_velocity():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 16, 2, 4, 4, generator=g)
    sigma = torch.tensor([3.0])
    x0_hat, _ = denoise(RecordingNet(eps - x0), x0 + 3.0 * eps, sigma, Video2WorldCondition(torch.zeros(1, 2, 8)))
    torch.testing.assert_close(x0_hat, x0, rtol=1e-5, atol=1e-5)


def test_sigma_sampler_distribution():
    g = torch.Generator().manual_seed(0)
    s = SigmaSampler(high_sigma_ratio=0.0)(20000, 24, generator=g)
    log_s = torch.log(s / math.sqrt(24))
    assert abs(log_s.mean().item()) < 0.03 and abs(log_s.std().item() - 1) < 0.03
    s = SigmaSampler(high_sigma_ratio=0.05)(20000, 1, generator=g)
    high = s[s >= 200]
    assert 0.04 < high.numel() / s.numel() < 0.06
    assert high.max() <= 1e5 * (1 + 1e-6)
    # log-uniform in [200, 1e5]: the mean of log sigma is the midpoint
    assert abs(torch.log(high).mean().item() - (math.log(200) + math.log(1e5)) / 2) < 0.15


def test_sigma_conditional_sets_the_conditioning_frames_timestep():
    x0 = torch.randn(1, 16, 3, 2, 2)
    net = RecordingNet(torch.zeros_like(x0))
    mask = conditioning_mask(torch.tensor([1]), x0.shape)
    denoise(net, x0, torch.tensor([2.0]), Video2WorldCondition(torch.zeros(1, 2, 8), x0, mask), sigma_conditional=0.5)
    assert torch.allclose(net.seen[1][0], torch.tensor([0.5 / 1.5, 2 / 3, 2 / 3]))
