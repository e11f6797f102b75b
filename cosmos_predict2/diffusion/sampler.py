"""The reference Video2World sampler (`RectifiedFlowAB2Scheduler`, docs/reference.md §2, "Sampling").

Pure math over a callable `x0_fn(x_sigma, sigma) -> x0_hat`; the network, conditioning and guidance live in the
callable (see `guided_x0_fn`), so the sampler can be tested against a toy denoiser with a closed-form answer.

- sigmas: Karras schedule, rho = 7, from sigma_max = 80 to sigma_min = 0.002, n_steps + 1 points, float64.
- x_0 = N(0, I) * sigma_max, drawn on the CPU with numpy `RandomState(seed)` (as the reference does), so the
  same seed gives the same noise on every machine, GPU model and rank.
- step 0 is first order; steps i >= 1 are the 2nd-order exponential multistep update in lambda = -log sigma;
  the state is kept in float64 between steps (each x0_hat is computed by the network in its own dtype).
- after the loop, one more x0 prediction at sigma_min is the result: n_steps + 1 evaluations of x0_fn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

SIGMA_MAX = 80.0
SIGMA_MIN = 0.002
RHO = 7.0
DEFAULT_NUM_STEPS = 35
DEFAULT_GUIDANCE = 7.0

X0Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def karras_sigmas(
    num_steps: int, sigma_max: float = SIGMA_MAX, sigma_min: float = SIGMA_MIN, rho: float = RHO
) -> torch.Tensor:
    """sigma_i = (sigma_max^(1/rho) + i/n (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i = 0..n (float64)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    ramp = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def initial_noise(shape: tuple[int, ...], seed: int, sigma_max: float = SIGMA_MAX) -> torch.Tensor:
    """x = N(0, I) * sigma_max in float32 on the CPU from numpy RandomState(seed): identical for a seed whatever
    the device (torch's CUDA generators differ between GPU models) and on every rank of a parallel run."""
    eps = np.random.RandomState(seed).standard_normal(shape).astype(np.float32)
    return torch.from_numpy(eps) * np.float32(sigma_max)


def phi1(z: float) -> float:
    """(e^z - 1) / z, with its limit 1 at z = 0."""
    return math.expm1(z) / z if z != 0 else 1.0


def phi2(z: float) -> float:
    """(phi1(z) - 1) / z, with its limit 1/2 at z = 0."""
    return (phi1(z) - 1.0) / z if abs(z) > 1e-8 else 0.5


def multistep_coefficients(sigma_prev: float, sigma_cur: float, sigma_next: float) -> tuple[float, float, float]:
    """(dt, b1, b2) of the 2nd-order multistep update (docs/reference.md §2): dt = log(sigma_i / sigma_{i+1}),
    c2 = (log sigma_i - log sigma_{i-1}) / dt, b2 = phi2(-dt) / c2, b1 = phi1(-dt) - b2."""
    dt = math.log(sigma_cur / sigma_next)
    c2 = (math.log(sigma_cur) - math.log(sigma_prev)) / dt
    b2 = phi2(-dt) / c2
    b1 = phi1(-dt) - b2
    return dt, b1, b2


@dataclass
class RectifiedFlowAB2Sampler:
    """The reference sampler. `sample(x0_fn, noise)` returns the final clean prediction (float32)."""

    num_steps: int = DEFAULT_NUM_STEPS
    sigma_max: float = SIGMA_MAX
    sigma_min: float = SIGMA_MIN
    rho: float = RHO

    def sigmas(self) -> torch.Tensor:
        return karras_sigmas(self.num_steps, self.sigma_max, self.sigma_min, self.rho)

    def initial_noise(self, shape: tuple[int, ...], seed: int) -> torch.Tensor:
        return initial_noise(shape, seed, self.sigma_max)

    @torch.no_grad()
    def sample(
        self,
        x0_fn: X0Fn,
        x_init: torch.Tensor,
        callback: Callable[[int, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Integrate from x_init (already scaled by sigma_max) down to sigma_min.

        x0_fn receives x_sigma in float32 and sigma as a float64 0-d tensor on x_init's device, and returns x0_hat
        (any float dtype). `callback(i, x0_hat)` is called after each evaluation (progress bars, tests).
        """
        sigmas = self.sigmas()
        device = x_init.device
        x = x_init.to(torch.float64)
        x0_prev: torch.Tensor | None = None
        for i in range(self.num_steps):
            s_cur, s_next = float(sigmas[i]), float(sigmas[i + 1])
            x0 = x0_fn(x.float(), torch.tensor(s_cur, dtype=torch.float64, device=device)).to(torch.float64)
            if callback is not None:
                callback(i, x0)
            if x0_prev is None:
                # First order: exact for a constant x0 along the ray from x0 through x_i.
                x = x0 + (s_next / s_cur) * (x - x0)
            else:
                dt, b1, b2 = multistep_coefficients(float(sigmas[i - 1]), s_cur, s_next)
                x = (s_next / s_cur) * x + dt * (b1 * x0 + b2 * x0_prev)
            x0_prev = x0
        sigma_end = torch.tensor(float(sigmas[-1]), dtype=torch.float64, device=device)
        x0 = x0_fn(x.float(), sigma_end).to(torch.float64)
        if callback is not None:
            callback(self.num_steps, x0)
        return x0.float()


def guidance_combine(x0_cond: torch.Tensor, x0_uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance in x0 space (docs/reference.md §2): x0 = x0_c + g (x0_c - x0_u)."""
    return x0_cond + guidance * (x0_cond - x0_uncond)


def _batched_or_none(denoise_fn, x_B: torch.Tensor, sigma_B: torch.Tensor, emb_2B: torch.Tensor,
                     on_out_of_memory: Callable[[], None] | None) -> torch.Tensor | None:
    """Both guidance branches in one call; None when it ran out of memory and `on_out_of_memory` is given."""
    try:
        return denoise_fn(x_B, sigma_B, emb_2B)
    except torch.OutOfMemoryError:
        if on_out_of_memory is None:
            raise
    # Outside the except block: the exception and the frames holding the failed call's tensors are gone.
    on_out_of_memory()
    return None


def guided_x0_fn(
    denoise_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    cond_emb_B_L_D: torch.Tensor,
    uncond_emb_B_L_D: torch.Tensor | None,
    guidance: float,
    batched: bool = True,
    branch_parallel=None,
    on_batched_out_of_memory: Callable[[], None] | None = None,
) -> X0Fn:
    """Build the sampler's x0_fn from `denoise_fn(x_sigma_B, sigma_B, emb_kB_L_D) -> x0_hat_kB`.

    denoise_fn evaluates every row of x against each of the k text embeddings it is given (k = emb rows / x
    rows), output rows ordered [all rows with text 0; all rows with text 1; ...], i.e. as if x were tiled k times.
    batched=True asks for both branches in one call with k = 2 (one pass over the weights; the network can share
    its text-independent first layers between the branches); batched=False runs them one after the other (half
    the activation memory). With guidance 0 or no unconditional embedding only the conditional branch runs.
    branch_parallel (parallel/guidance_parallel.GuidanceParallel): this process computes one branch and exchanges
    it with the process computing the other.
    on_batched_out_of_memory: when given, a batched call that runs out of device memory is called back (to free
    the cache and say so) and it and every later call run the branches one after the other instead: the same
    result, at the memory of one branch (14B at 720p: 39.7 GB against 49.1 GB on one H200).
    """
    def rows(emb_1_L_D: torch.Tensor, B: int) -> torch.Tensor:
        return emb_1_L_D.expand(B, -1, -1) if emb_1_L_D.shape[0] == 1 else emb_1_L_D

    if uncond_emb_B_L_D is None or guidance == 0:

        def x0_cond_only(x_B: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            B = x_B.shape[0]
            return denoise_fn(x_B, sigma.expand(B), rows(cond_emb_B_L_D, B))

        return x0_cond_only

    state = {"batched": batched}

    def x0_guided(x_B: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        B = x_B.shape[0]
        cond_emb, uncond_emb = rows(cond_emb_B_L_D, B), rows(uncond_emb_B_L_D, B)
        x0_2B = None
        if branch_parallel is None and state["batched"]:
            emb_2B = torch.cat([cond_emb, uncond_emb])
            x0_2B = _batched_or_none(denoise_fn, x_B, sigma.expand(B), emb_2B, on_batched_out_of_memory)
            state["batched"] = x0_2B is not None
        if branch_parallel is not None:
            mine = denoise_fn(x_B, sigma.expand(B), (cond_emb, uncond_emb)[branch_parallel.branch])
            x0_c, x0_u = branch_parallel.exchange(mine)
        elif x0_2B is not None:
            x0_c, x0_u = x0_2B[:B], x0_2B[B:]
        else:
            x0_c = denoise_fn(x_B, sigma.expand(B), cond_emb)
            x0_u = denoise_fn(x_B, sigma.expand(B), uncond_emb)
        return guidance_combine(x0_c, x0_u, guidance)

    return x0_guided


__all__ = [
    "DEFAULT_GUIDANCE",
    "DEFAULT_NUM_STEPS",
    "RectifiedFlowAB2Sampler",
    "SIGMA_MAX",
    "SIGMA_MIN",
    "guidance_combine",
    "guided_x0_fn",
    "initial_noise",
    "karras_sigmas",
    "multistep_coefficients",
]
