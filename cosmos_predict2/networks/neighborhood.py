"""Neighborhood attention over the video token grid: the self-attention of the sparse ("-natten") 720p models.

NVIDIA's NATTEN variants replace the dense self-attention of most blocks with generalized neighborhood attention
(NATTEN's `neighborhood_attention_generic`) over the (T, H, W) token grid; cross-attention stays dense. Each layer
has a window, a stride and a dilation per dimension (docs/reference.md §13; the per-layer table is
`NATTEN_PARAMETERS` below). The attention computed, per dimension of extent n (non-causal):

- dilation d splits the positions into d groups by `x % d`; a query attends only within its group, where its
  coordinate is `x // d` and the group's extent `ceil((n - x % d) / d)`;
- stride s groups the queries into runs of s; each run uses the window of its leader, the middle query
  (`(c // s) * s + s // 2`, clamped to the group's last index);
- the window of size k around the leader spans `k // 2` positions to the left and `k - k // 2 - 1` to the right,
  shifted to stay inside the group (the centre is clamped to `[k // 2, n_g - 1 - (k - k // 2 - 1)]`);
- a window size of -1 (or 1) means the whole extent.

A key is attended iff it lies in the query's window in every dimension: the mask is the product of three 1-D masks.

The `natten` package itself is not used: PyPI ships it as source only (a CUDA build against the exact torch
version), so it installs neither on CPU machines nor without a toolchain. Kernels, chosen automatically:
- "dense-groups": when every extent divides by its dilation and the window covers each dilation group entirely
  (the released models' "sparse global" layers), the groups are folded into the batch and the dense kernel runs
  (FlashAttention-4 / cuDNN, networks/attention.py) - exact, and as fast as dense attention on 1/G of the tokens;
- otherwise the dilation groups are folded into the batch and the tokens reordered into (t, h, w) tiles of 128
  so that neighbours share blocks, then
  - "fa4-block-sparse": when no window edge cuts a tile (every tile pair is attended entirely or not at all: all
    layers of the released models at 720p), without gradients, with FlashAttention-4 installed: FA4's block-sparse
    forward visits only the attended tiles, at dense attention's throughput;
  - "flex": otherwise PyTorch's FlexAttention with a block-sparse mask built from the three 1-D masks (compiled on
    CUDA; eager, unfused, on CPU);
  - "masked-sdpa": on CPU with gradients, where FlexAttention has no backward, SDPA with the explicit mask.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from cosmos_predict2.networks.attention import attention, block_sparse_attention, block_sparse_attention_runs

Triple = tuple[int, int, int]

# The released NATTEN variants' per-layer parameters (NVIDIA cosmos-predict2 configs/base/config_natten.py), for a
# base token grid of (T, 44, 80) - 720p. None: that layer stays dense.
_GLOBAL_HW = {"window_size": (-1, 4, 16), "dilation": (1, 11, 5), "base_size": (-1, 44, 80)}
_GLOBAL_W = {"window_size": (-1, 12, 16), "stride": (1, 4, 1), "dilation": (1, 1, 5), "base_size": (-1, 44, 80)}


def _local(h: int, w: int) -> dict:
    return {"window_size": (-1, h, w), "stride": (1, 4, 8), "base_size": (-1, 44, 80)}


_L12, _L20, _L28 = _local(12, 24), _local(20, 40), _local(28, 56)
NATTEN_PARAMETERS: dict[str, list[dict | None]] = {
    "2B": [_GLOBAL_HW, _GLOBAL_HW, _GLOBAL_W, _L12, _L12, _GLOBAL_W, _L12, _L12, _L12, _L12, _GLOBAL_W]
    + [_L20] * 12 + [_L28] + [_L20] * 3 + [_L12],
    "14B": [_GLOBAL_HW] * 11 + [_GLOBAL_W] * 2 + [_L12] * 10
    + [_L20, _L28, _L20, _L28, None, _L28, _L20, _L20, _L28, _L28, _L20, _L28, _L20],
}
_TILE_TOKENS = 128  # the block of FlexAttention (its default) and of FA4's block-sparse kernel: one grid tile per block


def _triple(value: int | Sequence[int]) -> Triple:
    return (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)


@dataclass(frozen=True)
class NeighborhoodParams:
    """One layer's neighborhood: window, stride and dilation per (T, H, W); base_size scales them to other grids."""

    window_size: Triple
    stride: Triple = (1, 1, 1)
    dilation: Triple = (1, 1, 1)
    base_size: Triple | None = None

    @classmethod
    def from_dict(cls, params: Mapping) -> NeighborhoodParams:
        if not isinstance(params, Mapping) or "window_size" not in params:
            raise ValueError(f"neighborhood parameters need at least 'window_size', got {params!r}")
        unknown = set(params) - {"window_size", "stride", "dilation", "base_size", "is_causal"}
        if unknown or params.get("is_causal", False):
            raise ValueError(f"unsupported neighborhood parameters {sorted(unknown) or ['is_causal']}")
        base = params.get("base_size")
        return cls(_triple(params["window_size"]), _triple(params.get("stride", 1)),
                   _triple(params.get("dilation", 1)), None if base is None else _triple(base))

    def resolve(self, grid: Triple) -> tuple[Triple, Triple, Triple]:
        """(window, stride, dilation) for this token grid, scaled from base_size as the reference does."""
        window = tuple(w if w > 1 else n for n, w in zip(grid, self.window_size))
        stride, dilation = self.stride, self.dilation
        if self.base_size is not None:
            base = tuple(b if b > 0 else n for n, b in zip(grid, self.base_size))
            scale = tuple(n / b for n, b in zip(grid, base))
            window = tuple(min(max(2, round(w * s)), n) for w, s, n in zip(window, scale, grid))
            stride = tuple(min(max(1, round(st * s)), w) for st, s, w in zip(stride, scale, window))
            max_dilation = tuple(n // w for n, w in zip(grid, window))
            dilation = tuple(min(max(1, round(d * s)), m) for d, s, m in zip(dilation, scale, max_dilation))
        if any(n < w * d for n, w, d in zip(grid, window, dilation)) or any(s > w for s, w in zip(stride, window)):
            raise ValueError(f"neighborhood window {window} x dilation {dilation} (stride {stride}) does not fit the "
                             f"token grid {grid}")
        return window, stride, dilation


def neighborhood_mask_1d(n: int, window: int, stride: int, dilation: int, device=None) -> torch.Tensor:
    """[n, n] bool: query position (row) attends key position (column) along one dimension (module docstring)."""
    x = torch.arange(n, device=device)
    group, coord = x % dilation, x // dilation
    group_extent = (n - group + dilation - 1) // dilation
    left, right = window // 2, window - window // 2 - 1
    leader = torch.minimum((coord // stride) * stride + stride // 2, group_extent - 1)
    centre = torch.maximum(torch.minimum(leader, group_extent - 1 - right), torch.full_like(leader, left))
    offset = coord[None, :] - centre[:, None]
    return (group[:, None] == group[None, :]) & (offset >= -left) & (offset <= right)


def neighborhood_mask(grid: Triple, window: Triple, stride: Triple, dilation: Triple, device=None) -> torch.Tensor:
    """[L, L] bool over the t-major token order of `grid` (small grids: tests and references)."""
    m_t, m_h, m_w = (neighborhood_mask_1d(*a, device=device) for a in zip(grid, window, stride, dilation))
    full = m_t[:, None, None, :, None, None] & m_h[None, :, None, None, :, None] & m_w[None, None, :, None, None, :]
    L = math.prod(grid)
    return full.reshape(L, L)


# --- token layouts ---------------------------------------------------------------------------------------------

def _fold_dilation(x_B_L_H_D: torch.Tensor, grid: Triple, dilation: Triple) -> torch.Tensor:
    """[B, T*H*W, h, D] -> [B*G, (T/dt)*(H/dh)*(W/dw), h, D]: each dilation group becomes a batch row."""
    B, _, heads, D = x_B_L_H_D.shape
    (T, H, W), (dt, dh, dw) = grid, dilation
    x = x_B_L_H_D.reshape(B, T // dt, dt, H // dh, dh, W // dw, dw, heads, D)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7, 8)  # B, dt, dh, dw, t, h, w, heads, D
    return x.reshape(B * dt * dh * dw, (T // dt) * (H // dh) * (W // dw), heads, D)


def _unfold_dilation(x: torch.Tensor, B: int, grid: Triple, dilation: Triple) -> torch.Tensor:
    (T, H, W), (dt, dh, dw) = grid, dilation
    heads, D = x.shape[-2:]
    x = x.reshape(B, dt, dh, dw, T // dt, H // dh, W // dw, heads, D).permute(0, 4, 1, 5, 2, 6, 3, 7, 8)
    return x.reshape(B, T * H * W, heads, D)


def _tile_shape(grid: Triple) -> Triple | None:
    """The (t, h, w) tile of _TILE_TOKENS tokens with the smallest spatial footprint that divides the grid."""
    best = None
    for t in range(1, _TILE_TOKENS + 1):
        for h in range(1, _TILE_TOKENS // t + 1):
            if _TILE_TOKENS % (t * h):
                continue
            w = _TILE_TOKENS // (t * h)
            if grid[0] % t or grid[1] % h or grid[2] % w:
                continue
            key = (h * w, abs(h - w))
            if best is None or key < best[0]:
                best = (key, (t, h, w))
    return None if best is None else best[1]


def _tile_order(grid: Triple, tile: Triple | None, device) -> torch.Tensor:
    """Token indices (t-major order) listed tile by tile: x[:, order] groups each tile's tokens together."""
    index = torch.arange(math.prod(grid), device=device).reshape(grid)
    if tile is None:
        return index.reshape(-1)
    (T, H, W), (t, h, w) = grid, tile
    tiles = index.reshape(T // t, t, H // h, h, W // w, w).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(-1)


def _to_tiles(x_B_L_H_D: torch.Tensor, grid: Triple, tile: Triple) -> torch.Tensor:
    """x[:, _tile_order(grid, tile)] as one reshape-and-copy (no index tensor)."""
    B, _, heads, D = x_B_L_H_D.shape
    (T, H, W), (t, h, w) = grid, tile
    x = x_B_L_H_D.reshape(B, T // t, t, H // h, h, W // w, w, heads, D).permute(0, 1, 3, 5, 2, 4, 6, 7, 8)
    return x.reshape(B, -1, heads, D)


def _from_tiles(x_B_L_H_D: torch.Tensor, grid: Triple, tile: Triple) -> torch.Tensor:
    B, _, heads, D = x_B_L_H_D.shape
    (T, H, W), (t, h, w) = grid, tile
    x = x_B_L_H_D.reshape(B, T // t, H // h, W // w, t, h, w, heads, D).permute(0, 1, 4, 2, 5, 3, 6, 7, 8)
    return x.reshape(B, -1, heads, D)


@functools.lru_cache(maxsize=64)
def _whole_tiles(grid: Triple, window: Triple, stride: Triple, dilation: Triple) -> torch.Tensor | None:
    """[M, M] bool over the tiles of `grid`: query tile attends key tile, when every query of each tile attends
    either every key of the other tile or none (no tile pair is cut by a window edge); else None. Exact because
    the mask is a product of 1-D masks and a tile a product of 1-D ranges: a tile pair is attended entirely if it
    is along every dimension, and not at all if it is not along one."""
    tile = _tile_shape(grid)
    if tile is None:
        return None
    whole, none = [], []
    for n, t, *params in zip(grid, tile, window, stride, dilation):
        pairs = neighborhood_mask_1d(n, *params).reshape(n // t, t, n // t, t)
        whole.append(pairs.all(dim=3).all(dim=1))
        none.append(~pairs.any(dim=3).any(dim=1))
    (wt, wh, ww), (nt, nh, nw) = whole, none
    whole_3d = wt[:, None, None, :, None, None] & wh[None, :, None, None, :, None] & ww[None, None, :, None, None, :]
    none_3d = nt[:, None, None, :, None, None] | nh[None, :, None, None, :, None] | nw[None, None, :, None, None, :]
    if not bool((whole_3d | none_3d).all()):
        return None
    M = whole_3d.shape[0] * whole_3d.shape[1] * whole_3d.shape[2]
    return whole_3d.reshape(M, M)


# --- kernels ---------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=64)
def _tile_blocks(grid: Triple, window: Triple, stride: Triple, dilation: Triple, device: torch.device):
    """(count [1, 1, M], index [1, 1, M, M]) int32 on `device`: the key tiles each query tile attends, or None when
    some tile pair is attended in part (`_whole_tiles`)."""
    pairs = _whole_tiles(grid, window, stride, dilation)
    if pairs is None:
        return None
    count = pairs.sum(dim=1, dtype=torch.int32)
    index = torch.argsort((~pairs).to(torch.int8), dim=1, stable=True).to(torch.int32)  # attended tiles first
    return count[None, None].to(device), index[None, None].contiguous().to(device)


@functools.cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


@functools.lru_cache(maxsize=64)
def _block_mask(grid: Triple, window: Triple, stride: Triple, dilation: Triple, device: torch.device):
    """FlexAttention's block mask for `grid` (one dilation group when folded), tokens in `_tile_order`."""
    from torch.nn.attention.flex_attention import create_block_mask

    order = _tile_order(grid, _tile_shape(grid), device)
    T, H, W = grid
    t_of, h_of, w_of = order // (H * W), (order // W) % H, order % W
    m_t, m_h, m_w = (neighborhood_mask_1d(*a, device=device) for a in zip(grid, window, stride, dilation))

    def mask_mod(b, h, q_idx, kv_idx):
        q, k = q_idx, kv_idx
        return m_t[t_of[q], t_of[k]] & m_h[h_of[q], h_of[k]] & m_w[w_of[q], w_of[k]]

    L = math.prod(grid)
    return create_block_mask(mask_mod, None, None, L, L, device=str(device), _compile=device.type == "cuda")


def _masked_attention(q_B_L_H_D, k_B_L_H_D, v_B_L_H_D, grid, window, stride, dilation) -> torch.Tensor:
    """SDPA with the explicit [L, L] mask: for CPU training, where FlexAttention has no backward."""
    import torch.nn.functional as F

    mask = neighborhood_mask(grid, window, stride, dilation, device=q_B_L_H_D.device)
    q, k, v = (t.transpose(1, 2) for t in (q_B_L_H_D, k_B_L_H_D, v_B_L_H_D))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


def _flex_attention(q_B_L_H_D, k_B_L_H_D, v_B_L_H_D, grid, window, stride, dilation) -> torch.Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    block_mask = _block_mask(grid, window, stride, dilation, q_B_L_H_D.device)
    q, k, v = (t.transpose(1, 2) for t in (q_B_L_H_D, k_B_L_H_D, v_B_L_H_D))
    if q.is_cuda:
        return _compiled_flex_attention()(q, k, v, block_mask=block_mask).transpose(1, 2)
    with warnings.catch_warnings():  # eager FlexAttention on CPU is the unfused reference: fine for small grids
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=block_mask).transpose(1, 2)


def _sparse_attention(q_B_L_H_D, k_B_L_H_D, v_B_L_H_D, grid, window, stride, dilation, kernel: str) -> torch.Tensor:
    """Masked attention on `grid` by `kernel` ("fa4-block-sparse", "flex" or "masked-sdpa": `neighborhood_kernel`)."""
    if kernel == "masked-sdpa":
        return _masked_attention(q_B_L_H_D, k_B_L_H_D, v_B_L_H_D, grid, window, stride, dilation)
    tile = _tile_shape(grid)
    to_tiles = (lambda x: x) if tile is None else functools.partial(_to_tiles, grid=grid, tile=tile)
    q, k, v = (to_tiles(t) for t in (q_B_L_H_D, k_B_L_H_D, v_B_L_H_D))
    if kernel == "fa4-block-sparse":
        count, index = _tile_blocks(grid, window, stride, dilation, q.device)
        out = block_sparse_attention(q, k, v, count, index, _TILE_TOKENS)
    else:
        out = _flex_attention(q, k, v, grid, window, stride, dilation)
    return out if tile is None else _from_tiles(out, grid, tile)


def _covers_groups(grid: Triple, window: Triple, dilation: Triple) -> bool:
    """Every extent divides by its dilation and the window spans each dilation group: dense attention per group."""
    return all(n % d == 0 and w == n // d for n, w, d in zip(grid, window, dilation))


def neighborhood_kernel(grid: Triple, window: Triple, stride: Triple, dilation: Triple,
                        q_B_L_H_D: torch.Tensor | None = None, needs_grad: bool = False) -> str:
    """The kernel `NeighborhoodAttention` runs on this grid for inputs like `q_B_L_H_D` (None: a CUDA bf16 input
    with FlashAttention-4 available), with or without gradients: "dense-groups", "fa4-block-sparse", "flex" or
    "masked-sdpa" (module docstring). On a folded dilation group the caller passes the group's grid, dilation 1."""
    if _covers_groups(grid, window, dilation):
        return "dense-groups"
    on_fa4 = not needs_grad if q_B_L_H_D is None else block_sparse_attention_runs(q_B_L_H_D, needs_grad)
    if on_fa4 and _whole_tiles(grid, window, stride, dilation) is not None:
        return "fa4-block-sparse"
    if needs_grad and q_B_L_H_D is not None and not q_B_L_H_D.is_cuda:  # FlexAttention has no CPU backward
        return "masked-sdpa"
    return "flex"


class NeighborhoodAttention:
    """One self-attention layer's kernel call (`Attention.attention_fn`): q/k/v [B, T*H*W, heads, D] over the
    token grid `video_size` = (T, H, W), t-major order."""

    def __init__(self, params: Mapping | NeighborhoodParams) -> None:
        self.params = params if isinstance(params, NeighborhoodParams) else NeighborhoodParams.from_dict(params)
        self.last_kernel: str | None = None  # what the last call ran, for benchmark reports

    def __call__(self, q_B_L_H_D: torch.Tensor, k_B_L_H_D: torch.Tensor, v_B_L_H_D: torch.Tensor,
                 video_size: Triple | None = None) -> torch.Tensor:
        if video_size is None:
            raise ValueError("neighborhood attention needs the token grid (video_size)")
        grid = tuple(int(n) for n in video_size)
        if q_B_L_H_D.shape[1] != math.prod(grid) or k_B_L_H_D.shape != q_B_L_H_D.shape:
            raise ValueError(f"neighborhood attention: q {tuple(q_B_L_H_D.shape)}, k {tuple(k_B_L_H_D.shape)} do not "
                             f"match the token grid {grid}")
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q_B_L_H_D, k_B_L_H_D, v_B_L_H_D))
        kernel = self.last_kernel = self.kernel(grid, q_B_L_H_D, needs_grad)
        if kernel == "dense":
            return attention(q_B_L_H_D, k_B_L_H_D, v_B_L_H_D)
        window, stride, dilation = self.params.resolve(grid)
        if not all(n % d == 0 for n, d in zip(grid, dilation)):  # unequal dilation groups: mask on the whole grid
            return _sparse_attention(q_B_L_H_D, k_B_L_H_D, v_B_L_H_D, grid, window, stride, dilation, kernel)
        B = q_B_L_H_D.shape[0]
        q, k, v = (_fold_dilation(t, grid, dilation) for t in (q_B_L_H_D, k_B_L_H_D, v_B_L_H_D))
        if kernel == "dense-groups":
            out = attention(q, k, v)
        else:
            group_grid = tuple(n // d for n, d in zip(grid, dilation))
            out = _sparse_attention(q, k, v, group_grid, window, stride, (1, 1, 1), kernel)
        return _unfold_dilation(out, B, grid, dilation)

    def kernel(self, grid: Triple, q_B_L_H_D: torch.Tensor | None = None, needs_grad: bool = False) -> str:
        """The kernel this layer runs on the token grid `grid` for inputs like `q_B_L_H_D` (None: CUDA bf16 with
        FlashAttention-4): "dense" (a single frame, as the reference) or one of `neighborhood_kernel`'s."""
        if grid[0] == 1:
            return "dense"
        window, stride, dilation = self.params.resolve(grid)
        if not all(n % d == 0 for n, d in zip(grid, dilation)):
            return neighborhood_kernel(grid, window, stride, dilation, q_B_L_H_D, needs_grad)
        if _covers_groups(grid, window, dilation):
            return "dense-groups"
        group_grid = tuple(n // d for n, d in zip(grid, dilation))
        return neighborhood_kernel(group_grid, window, stride, (1, 1, 1), q_B_L_H_D, needs_grad)

    def __repr__(self) -> str:
        return f"NeighborhoodAttention({self.params})"


def neighborhood_kernels_run(net: torch.nn.Module) -> str:
    """Which kernels the network's neighborhood layers ran in their last call, e.g. "fa4-block-sparse x26,
    dense-groups x2" ("" for a dense network)."""
    calls = [block.self_attn.attention_fn for block in net.blocks]
    calls = [getattr(call, "local_attention", call) for call in calls]  # under context parallelism: the local call
    kernels = Counter(call.last_kernel for call in calls if isinstance(call, NeighborhoodAttention))
    return ", ".join(f"{kernel or 'not run'} x{n}" for kernel, n in kernels.most_common())


def natten_parameters_for(model_size: str) -> list[dict | None]:
    """The released NATTEN variant's per-layer parameters for "2B" or "14B"."""
    if model_size not in NATTEN_PARAMETERS:
        raise ValueError(f"no NATTEN variant of the {model_size} model; there are {', '.join(NATTEN_PARAMETERS)}")
    return NATTEN_PARAMETERS[model_size]


def apply_neighborhood_attention(net: torch.nn.Module, natten_parameters: Sequence[Mapping | None]) -> torch.nn.Module:
    """Make `net` (a MiniTrainDIT) the sparse-attention variant: block i's self-attention becomes neighborhood
    attention with `natten_parameters[i]` (None: stays dense). Same weights and checkpoint keys as the dense model;
    apply before context parallelism, which wraps each layer's kernel call."""
    blocks = net.blocks
    if len(natten_parameters) != len(blocks):
        raise ValueError(f"natten_parameters has {len(natten_parameters)} entries for {len(blocks)} blocks")
    for block, params in zip(blocks, natten_parameters):
        if params is not None:
            block.self_attn.attention_fn = NeighborhoodAttention(params)
    return net
