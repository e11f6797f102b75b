"""Scaled dot-product attention with an explicit, switchable kernel choice.

Attention is ~85% of a 720p DiT forward, so the kernel decides the speed. Backends:

- "fa4": FlashAttention-4's CuTe-DSL kernels (`pip install flash-attn-4`, module `flash_attn.cute`), which
  have a Hopper (sm90) path in FlashAttention-3's design. Takes [B, L, heads, head_dim] as is (no transposes).
  Used for CUDA bf16/fp16 inputs on sm90 and newer; anything else (CPU, fp32, older GPUs) goes to "cudnn".
- "cudnn": PyTorch SDPA's cuDNN kernel (falls back to flash, then efficient). On H100/H200 it measured ~1.8x
  faster than PyTorch's flash backend at the DiT's shapes (head dim 128, 30k-85k tokens).
- "flash", "efficient", "math": that PyTorch SDPA backend alone; "auto": PyTorch chooses.

The default, "best", is "fa4" where it runs and no gradient is needed (inference), else "cudnn". Training stays on
cuDNN because selective activation checkpointing keeps attention outputs by recognising PyTorch's SDPA ops; FA4's
kernels are invisible to it, so attention would be recomputed in the backward (720p LoRA step measured 15.2 s with
FA4 vs 14.0 s with cuDNN, BENCHMARKS.md). Choose "fa4" explicitly to train with it anyway (e.g. with full
checkpointing, which recomputes attention in any case). `set_attention_backend` or the `COSMOS_ATTN_BACKEND`
environment variable picks one; `resolved_attention_backend` says which runs.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

_SDPA_BACKENDS = {
    "cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION],
    "flash": [SDPBackend.FLASH_ATTENTION],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
    "math": [SDPBackend.MATH],
    "auto": None,
}
BACKENDS = ("best", "fa4", *_SDPA_BACKENDS)

_backend = "best"  # the environment's choice is applied (and checked) at the end of this module


def set_attention_backend(name: str) -> None:
    """Choose the attention kernel: one of `BACKENDS` (see the module docstring)."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "fa4" and _fa4_function() is None:
        raise ValueError("attention backend 'fa4' needs FlashAttention-4: `pip install flash-attn-4` "
                         "(a CUDA machine; module flash_attn.cute), or choose 'cudnn'")
    _backend = name


def get_attention_backend() -> str:
    return _backend


@functools.cache
def _fa4_function() -> Callable | None:
    """`flash_attn.cute.flash_attn_func` if FlashAttention-4 is installed and imports, else None."""
    try:
        from flash_attn.cute import flash_attn_func
    except Exception:  # not installed, or no CUDA toolchain behind it: the SDPA backends remain
        return None
    # CuTe DSL warns at each kernel compile that FA4's optional aux_data argument is not a JIT argument (it is
    # None here); the warning says nothing about our call, so it is silenced.
    warnings.filterwarnings("ignore", message="Argument aux_data .* cannot be converted", category=UserWarning)
    return flash_attn_func


def _fa4_supports(q: torch.Tensor) -> bool:
    return (q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and q.shape[-1] % 8 == 0
            and q.shape[-1] <= 256 and torch.cuda.get_device_capability(q.device)[0] >= 9)


def resolved_attention_backend(q_B_L_H_D: torch.Tensor, needs_grad: bool = False) -> str:
    """The backend `attention` runs for inputs like `q_B_L_H_D` under the current setting."""
    if not q_B_L_H_D.is_cuda:
        return "auto"  # the choice only concerns CUDA; PyTorch picks its CPU kernel
    if _backend == "fa4" or (_backend == "best" and not needs_grad):  # training never imports FA4 (~7 s)
        return "fa4" if _fa4_function() is not None and _fa4_supports(q_B_L_H_D) else "cudnn"
    return "cudnn" if _backend == "best" else _backend


def attention_backend_for(device: torch.device, dtype: torch.dtype, needs_grad: bool = False) -> str:
    """The backend the DiT's attention (head dim 128) runs on `device` in `dtype`: for logs and benchmark records."""
    return resolved_attention_backend(torch.empty(1, 1, 1, 128, device=device, dtype=dtype), needs_grad)


def attention(q_B_L_H_D: torch.Tensor, k_B_M_H_D: torch.Tensor, v_B_M_H_D: torch.Tensor) -> torch.Tensor:
    """Softmax attention without mask, scale 1/sqrt(head_dim). Inputs and output are [B, L, heads, head_dim]."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q_B_L_H_D, k_B_M_H_D, v_B_M_H_D))
    name = resolved_attention_backend(q_B_L_H_D, needs_grad)
    if name == "fa4":
        out = _fa4_function()(q_B_L_H_D, k_B_M_H_D, v_B_M_H_D)
        return out[0] if isinstance(out, tuple) else out
    q, k, v = (t.transpose(1, 2) for t in (q_B_L_H_D, k_B_M_H_D, v_B_M_H_D))
    backends = _SDPA_BACKENDS[name]
    if backends is None:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        with sdpa_kernel(backends, set_priority=True):
            out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2)


if os.environ.get("COSMOS_ATTN_BACKEND"):
    try:
        set_attention_backend(os.environ["COSMOS_ATTN_BACKEND"])
    except ValueError as e:
        raise ValueError(f"environment variable COSMOS_ATTN_BACKEND: {e}") from None
