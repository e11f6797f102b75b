"""The reference sampler (docs/reference.md §2) vs an independent float64 version and closed-form toy denoisers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cosmos_predict2.diffusion.sampler import (
    RectifiedFlowAB2Sampler,
    guidance_combine,
    guided_x0_fn,
    initial_noise,
    karras_sigmas,
)


def _spec_sampler_numpy(x0_fn, x_init: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """docs/reference.md §2 written out again in numpy float64, independently of the module under test."""
    i = np.arange(n + 1) / n
    sig = (80 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    x, prev, calls = x_init.astype(np.float64), None, 0
    for k in range(n):
        x0 = x0_fn(x, sig[k])
        calls += 1
        if k == 0:
            x = x0 + sig[k + 1] / sig[k] * (x - x0)
        else:
            dt = np.log(sig[k] / sig[k + 1])
            c2 = (np.log(sig[k]) - np.log(sig[k - 1])) / dt
            z = -dt
            p1 = (np.exp(z) - 1) / z
            p2 = (p1 - 1) / z
            b2 = p2 / c2
            b1 = p1 - b2
            x = sig[k + 1] / sig[k] * x + dt * (b1 * x0 + b2 * prev)
        prev = x0
    calls += 1
    return x0_fn(x, sig[-1]), calls


def _gaussian_x0(mu: float, s: float):
    """Data x0 ~ N(mu, s^2) per element: E[x0 | x_sigma] = mu + s^2 / (s^2 + sigma^2) (x_sigma - mu)."""

    def fn(x, sigma):
        sigma = float(sigma)
        return mu + s**2 / (s**2 + sigma**2) * (x - mu)

    return fn


def test_karras_sigmas_endpoints_and_formula():
    sig = karras_sigmas(35)
    assert sig.dtype == torch.float64 and sig.shape == (36,)
    assert sig[0].item() == pytest.approx(80.0, rel=1e-12) and sig[-1].item() == pytest.approx(0.002, rel=1e-12)
    i = 17 / 35
    expected = (80 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert sig[17].item() == pytest.approx(expected, rel=1e-14)
    assert torch.all(sig[1:] < sig[:-1])


@pytest.mark.parametrize("num_steps", [1, 2, 5, 35])
def test_matches_independent_spec_implementation(num_steps):
    mu, s = 0.3, 0.7
    x_init = initial_noise((2, 3, 4), seed=5)
    calls = []

    def x0_fn(x, sigma):
        calls.append(float(sigma))
        assert x.dtype == torch.float32 and sigma.dtype == torch.float64
        return _gaussian_x0(mu, s)(x.double(), sigma)

    ours = RectifiedFlowAB2Sampler(num_steps=num_steps).sample(x0_fn, x_init)
    ref, n_calls = _spec_sampler_numpy(_gaussian_x0(mu, s), x_init.double().numpy(), num_steps)
    assert len(calls) == n_calls == num_steps + 1  # 35 steps -> 36 evaluations (docs/reference.md §2)
    assert calls[-1] == pytest.approx(0.002)
    # ours passes x to x0_fn in fp32 (the network's input precision), the numpy reference keeps fp64.
    np.testing.assert_allclose(ours.double().numpy(), ref, rtol=1e-5, atol=1e-5)


def test_gaussian_closed_form_solution_second_order():
    """The probability-flow ODE for Gaussian data has the exact solution
    x(sigma) = mu + sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_max^2) (x_max - mu). The sampler converges to it at
    second order (error / 4 when the step count doubles), and 35 steps are within 2% of it."""
    mu, s = -0.4, 0.5
    x_init = initial_noise((4096,), seed=0)
    x_min = mu + math.sqrt(s**2 + 0.002**2) / math.sqrt(s**2 + 80**2) * (x_init.double() - mu)
    exact = mu + s**2 / (s**2 + 0.002**2) * (x_min - mu)
    errors = {}
    for n in (35, 70, 140):
        out = RectifiedFlowAB2Sampler(n).sample(lambda x, sig: _gaussian_x0(mu, s)(x.double(), sig), x_init)
        errors[n] = (out.double() - exact).abs().max().item()
    assert errors[35] < 0.02 * exact.abs().max()
    assert 3.0 < errors[35] / errors[70] < 5.0 and 3.0 < errors[70] / errors[140] < 5.0, errors
    assert out.mean().item() == pytest.approx(mu, abs=0.03)  # samples follow the data distribution
    assert out.std().item() == pytest.approx(s, rel=0.05)


def test_point_mass_is_reached_exactly():
    """With x0_hat constant both update rules are exact: the result is that point (to fp64 rounding)."""
    target = torch.full((3, 5), 0.25)
    out = RectifiedFlowAB2Sampler(7).sample(lambda x, sig: target, initial_noise((3, 5), seed=1))
    torch.testing.assert_close(out, target, rtol=0, atol=1e-6)


def test_initial_noise_is_numpy_randomstate_times_80():
    x = initial_noise((2, 3), seed=42)
    expected = np.random.RandomState(42).standard_normal((2, 3)).astype(np.float32) * np.float32(80)
    np.testing.assert_array_equal(x.numpy(), expected)
    assert torch.equal(initial_noise((2, 3), 42), x) and not torch.equal(initial_noise((2, 3), 43), x)


def test_guidance_formula_and_batching():
    g = 7.0
    x = torch.randn(2, 2, 3)  # two distinct samples: the batched call must keep each with its own branches
    cond, uncond = torch.ones(1, 4, 2), torch.zeros(1, 4, 2)
    seen_batches = []

    def denoise_fn(x_B, sigma_B, emb_kB):
        # The contract: each x row against each of the k text embeddings, rows ordered as x tiled k times.
        k = emb_kB.shape[0] // x_B.shape[0]
        seen_batches.append((x_B.shape[0], emb_kB.shape[0]))
        assert sigma_B.shape == (x_B.shape[0],)
        return x_B.repeat(k, 1, 1) * 0.5 + emb_kB[:, :1, :1].reshape(-1, 1, 1) * 2.0  # branch-dependent answer

    sigma = torch.tensor(3.0, dtype=torch.float64)
    batched = guided_x0_fn(denoise_fn, cond, uncond, g, batched=True)(x, sigma)
    sequential = guided_x0_fn(denoise_fn, cond, uncond, g, batched=False)(x, sigma)
    assert seen_batches == [(2, 4), (2, 2), (2, 2)]
    x0_c, x0_u = x * 0.5 + 2.0, x * 0.5
    torch.testing.assert_close(batched, x0_c + g * (x0_c - x0_u))
    torch.testing.assert_close(sequential, batched)
    torch.testing.assert_close(guidance_combine(x0_c, x0_u, 0.0), x0_c)
    # guidance 0: only the conditional branch is evaluated
    seen_batches.clear()
    torch.testing.assert_close(guided_x0_fn(denoise_fn, cond, uncond, 0.0)(x, sigma), x0_c)
    assert seen_batches == [(2, 2)]


def test_batched_guidance_out_of_memory_retries_branch_by_branch():
    cond, uncond = torch.ones(1, 4, 2), torch.zeros(1, 4, 2)
    x, sigma = torch.randn(1, 2, 3), torch.tensor(3.0)
    calls, fallbacks = [], []

    def denoise_fn(x_B, sigma_B, emb_kB):
        calls.append(emb_kB.shape[0])
        if emb_kB.shape[0] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return x_B * 0.5 + emb_kB[:, :1, :1].reshape(-1, 1, 1) * 2.0

    x0_fn = guided_x0_fn(denoise_fn, cond, uncond, 7.0, batched=True,
                         on_batched_out_of_memory=lambda: fallbacks.append(1))
    first, second = x0_fn(x, sigma), x0_fn(x, sigma)
    expected = guided_x0_fn(denoise_fn, cond, uncond, 7.0, batched=False)(x, sigma)
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(second, expected, rtol=0, atol=0)
    assert calls[:5] == [2, 1, 1, 1, 1] and fallbacks == [1]
    # without a callback the error is the caller's, as before
    with pytest.raises(torch.OutOfMemoryError):
        guided_x0_fn(denoise_fn, cond, uncond, 7.0, batched=True)(x, sigma)
