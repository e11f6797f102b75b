"""Scaled dot-product attention with an explicit, switchable kernel choice.

Attention is ~85% of a 720p DiT forward, so the kernel decides the speed. Backends:

- "fa4": FlashAttention-4's CuTe-DSL kernels (`pip install flash-attn-4`, module `flash_attn.cute`), which
  have a Hopper (sm90) path in FlashAttention-3's design. Takes [B, L, heads, head_dim] as is (no transposes).
  Used for CUDA bf16/fp16 inputs on sm90 and newer; anything else (CPU, fp32, older GPUs) goes to "cudnn".
- "cudnn": PyTorch SDPA's cuDNN kernel (falls back to flash, then efficient). On H100/H200 it measured ~1.8x
  faster than PyTorch's flash backend at the DiT's shapes (head dim 128, 30k-85k tokens).
- "flash", "efficient", "math": that PyTorch SDPA backend alone; "auto": PyTorch chooses.

The default, "best", is "fa4" where it runs, else "cudnn". FA4 runs as a PyTorch custom operator with its own
autograd (`cosmos_predict2::fa4_attention`, forward and backward kernels of FlashAttention-4), so selective activation
checkpointing recognises it like an SDPA op and keeps its output instead of recomputing attention in the backward.
`set_attention_backend` or the `COSMOS_ATTN_BACKEND` environment variable picks one; `resolved_attention_backend`
says which runs.
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


# FA4's sm90 forward tile (tile_m, tile_n) for q shapes [B, L, heads, head_dim] where one was measured faster than its
# default 128 x 128 (benchmarks/bench_fa4_tiles.py, BENCHMARKS.md 2026-12-04): the 2B 480p guidance batch, 23.5 ms
# instead of 24.8 ms per layer (outputs within 2.4e-4). At 720p (2B and 14B) no tile beat the default.
FA4_SM90_FORWARD_TILES: dict[tuple[int, int, int, int], tuple[int, int]] = {(2, 31104, 16, 128): (128, 144)}


def fa4_forward_tile(q_shape: tuple[int, ...], capability: tuple[int, int]) -> tuple[int, int] | None:
    """The measured forward tile for this q shape on a GPU of this compute capability; None: FA4's default."""
    return FA4_SM90_FORWARD_TILES.get(tuple(q_shape)) if capability == (9, 0) else None


@functools.cache
def _fa4_kernels() -> tuple[Callable, Callable] | None:
    """FlashAttention-4's (forward, backward) kernel calls if the package is installed and imports, else None.

    forward(q, k, v) -> (out, lse) and backward(q, k, v, out, dout, lse) -> (dq, dk, dv), tensors [B, L, heads, D]
    and lse [B, heads, L] fp32, scale 1/sqrt(D), no mask."""
    try:
        from flash_attn.cute.interface import _flash_attn_bwd, _flash_attn_fwd
    except Exception:  # not installed, or no CUDA toolchain behind it: the SDPA backends remain
        return None
    # CuTe DSL warns at each kernel compile that FA4's optional aux_data argument is not a JIT argument (it is
    # None here); the warning says nothing about our call, so it is silenced.
    warnings.filterwarnings("ignore", message="Argument aux_data .* cannot be converted", category=UserWarning)

    def forward(q, k, v):
        tile = fa4_forward_tile(q.shape, torch.cuda.get_device_capability(q.device))
        out, lse, *_ = _flash_attn_fwd(q, k, v, return_lse=True, **({"tile_mn": tile} if tile else {}))
        return out, lse

    def backward(q, k, v, out, dout, lse):
        dq, dk, dv = _flash_attn_bwd(q, k, v, out, dout, lse)[:3]
        return dq, dk, dv

    return forward, backward


def _fa4_function() -> Callable | None:
    """The FA4 attention call (differentiable custom op) if FlashAttention-4 is available, else None."""
    return fa4_attention if _fa4_kernels() is not None else None


# FA4 as an opaque custom operator: autograd calls FA4's own backward kernel, torch.compile sees a fake (shape-only)
# implementation, and selective checkpointing sees one op whose outputs it can keep (networks/dit.py).
@torch.library.custom_op("cosmos_predict2::fa4_attention", mutates_args=())
def _fa4_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = _fa4_kernels()[0](q, k, v)
    return out, lse


@_fa4_attention_op.register_fake
def _(q, k, v):
    B, L, H, _ = q.shape
    return q.new_empty(B, L, H, v.shape[-1]), q.new_empty(B, H, L, dtype=torch.float32)


@torch.library.custom_op("cosmos_predict2::fa4_attention_backward", mutates_args=())
def _fa4_attention_backward_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               out: torch.Tensor, lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = _fa4_kernels()[1](q, k, v, out, dout.contiguous(), lse)
    return dq, dk, dv


@_fa4_attention_backward_op.register_fake
def _(dout, q, k, v, out, lse):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _fa4_setup_context(ctx, inputs, output):
    q, k, v = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)


def _fa4_backward(ctx, dout, dlse):
    del dlse  # lse is an auxiliary output: nothing downstream differentiates it
    q, k, v, out, lse = ctx.saved_tensors
    return _fa4_attention_backward_op(dout, q, k, v, out, lse)


_fa4_attention_op.register_autograd(_fa4_backward, setup_context=_fa4_setup_context)
FA4_ATTENTION_OP = torch.ops.cosmos_predict2.fa4_attention.default


def fa4_attention(q_B_L_H_D: torch.Tensor, k_B_M_H_D: torch.Tensor, v_B_M_H_D: torch.Tensor) -> torch.Tensor:
    return _fa4_attention_op(q_B_L_H_D, k_B_M_H_D, v_B_M_H_D)[0]


@functools.cache
def _fa4_block_sparse_forward() -> Callable | None:
    """FlashAttention-4's block-sparse forward if it imports, else None: forward(q, k, v, count, index, block)."""
    if _fa4_kernels() is None:
        return None
    try:
        from flash_attn.cute.block_sparsity import BlockSparseTensorsTorch
        from flash_attn.cute.interface import _flash_attn_fwd
    except Exception:  # an FA4 build without block sparsity
        return None

    def forward(q, k, v, count, index, block):
        # Every listed block is attended entirely ("full" blocks): no mask function runs, the "masked" list is empty.
        blocks = BlockSparseTensorsTorch(torch.zeros_like(count), index, count, index, block_size=(block, block))
        return _flash_attn_fwd(q, k, v, block_sparse_tensors=blocks)[0]

    return forward


def block_sparse_attention_runs(q_B_L_H_D: torch.Tensor, needs_grad: bool) -> bool:
    """Whether `block_sparse_attention` runs for inputs like `q_B_L_H_D`: FA4 chosen and importable, no gradient
    needed (the block-sparse path is forward-only; training keeps FlexAttention and its backward)."""
    return (not needs_grad and resolved_attention_backend(q_B_L_H_D) == "fa4"
            and _fa4_block_sparse_forward() is not None)


def block_sparse_attention(q_B_L_H_D: torch.Tensor, k_B_L_H_D: torch.Tensor, v_B_L_H_D: torch.Tensor,
                           count_1_1_M: torch.Tensor, index_1_1_M_N: torch.Tensor, block: int) -> torch.Tensor:
    """Attention where query block m (tokens [m*block, (m+1)*block)) attends exactly the key blocks
    `index_1_1_M_N[0, 0, m, :count_1_1_M[0, 0, m]]`, each entirely; int32 tensors on q's device. FA4's forward
    kernel visits only those blocks, at dense attention's throughput. Check `block_sparse_attention_runs` first."""
    return _fa4_block_sparse_forward()(q_B_L_H_D, k_B_L_H_D, v_B_L_H_D, count_1_1_M, index_1_1_M_N, block)


def _fa4_supports(q: torch.Tensor) -> bool:
    return (q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and q.shape[-1] % 8 == 0
            and q.shape[-1] <= 256 and torch.cuda.get_device_capability(q.device)[0] >= 9)


def resolved_attention_backend(q_B_L_H_D: torch.Tensor) -> str:
    """The backend `attention` runs for inputs like `q_B_L_H_D` under the current setting."""
    if not q_B_L_H_D.is_cuda:
        return "auto"  # the choice only concerns CUDA; PyTorch picks its CPU kernel
    if _backend in ("fa4", "best"):
        return "fa4" if _fa4_function() is not None and _fa4_supports(q_B_L_H_D) else "cudnn"
    return _backend


def attention_backend_for(device: torch.device, dtype: torch.dtype) -> str:
    """The backend the DiT's attention (head dim 128) runs on `device` in `dtype`: for logs and benchmark records."""
    return resolved_attention_backend(torch.empty(1, 1, 1, 128, device=device, dtype=dtype))


def attention(q_B_L_H_D: torch.Tensor, k_B_M_H_D: torch.Tensor, v_B_M_H_D: torch.Tensor,
              video_size: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Softmax attention without mask, scale 1/sqrt(head_dim). Inputs and output are [B, L, heads, head_dim].
    `video_size`, the token grid self-attention layers pass, is for grid-aware kernels; dense attention ignores it."""
    del video_size
    name = resolved_attention_backend(q_B_L_H_D)
    if name == "fa4":
        return fa4_attention(q_B_L_H_D, k_B_M_H_D, v_B_M_H_D)
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
