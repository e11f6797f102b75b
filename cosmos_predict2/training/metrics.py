"""Frame metrics of held-out generations against the real frames (own code, no weights needed).

Both take uint8-range frames `[T, H, W, 3]` (numpy or torch) of the same shape.

PSNR = 10 log10(255^2 / MSE), MSE the mean of (a - b)^2 over every frame, pixel and channel (float64); +inf for
identical inputs.

SSIM (Wang et al. 2004, the usual constants): per frame and channel, with local statistics under an 11x11
Gaussian window of standard deviation 1.5 (no padding: only windows fully inside the frame),
    SSIM = (2 mu_a mu_b + C1)(2 sigma_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(sigma_a^2 + sigma_b^2 + C2)),
C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, averaged over every window position, channel and frame. Frames smaller
than the window use a window of the frame's size. 1 for identical inputs; for two constant frames of values a and
b it is (2ab + C1) / (a^2 + b^2 + C1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

DATA_RANGE = 255.0
K1, K2 = 0.01, 0.03
WINDOW, WINDOW_SIGMA = 11, 1.5


def _frames(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def psnr(a, b) -> float:
    a, b = _frames(a), _frames(b)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(DATA_RANGE**2 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # [1, 1, k, k]


def ssim(a, b) -> float:
    a, b = _frames(a), _frames(b)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim: need two [T, H, W, C] arrays of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    T, H, W, C = a.shape
    a_N_1_H_W = a.permute(0, 3, 1, 2).reshape(T * C, 1, H, W)
    b_N_1_H_W = b.permute(0, 3, 1, 2).reshape(T * C, 1, H, W)
    k = min(WINDOW, H, W)
    w = _gaussian_window(k, WINDOW_SIGMA)
    mu_a, mu_b = F.conv2d(a_N_1_H_W, w), F.conv2d(b_N_1_H_W, w)
    var_a = F.conv2d(a_N_1_H_W * a_N_1_H_W, w) - mu_a**2
    var_b = F.conv2d(b_N_1_H_W * b_N_1_H_W, w) - mu_b**2
    cov = F.conv2d(a_N_1_H_W * b_N_1_H_W, w) - mu_a * mu_b
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


__all__ = ["psnr", "ssim"]
