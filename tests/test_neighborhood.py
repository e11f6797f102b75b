"""Neighborhood attention (the NATTEN variants) against an independent brute-force definition, on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from cosmos_predict2.networks import build_net
from cosmos_predict2.networks.attention import attention
from cosmos_predict2.networks.neighborhood import (
    NATTEN_PARAMETERS,
    NeighborhoodAttention,
    NeighborhoodParams,
    natten_parameters_for,
    neighborhood_mask,
    neighborhood_mask_1d,
)
from cosmos_predict2.networks.weights import randomize_


def _window_by_enumeration(n: int, k: int, s: int, d: int) -> list[set[int]]:
    """Per query, the set of keys it attends, written as a window start over the query's dilation group: the
    window of the stride group's middle query, k wide, shifted to stay inside the group."""
    neighbours = []
    for x in range(n):
        members = list(range(x % d, n, d))  # the query's dilation group, in order
        c = members.index(x)
        leader = min((c // s) * s + s // 2, len(members) - 1)
        start = min(max(leader - k // 2, 0), len(members) - k)
        neighbours.append(set(members[start:start + k]))
    return neighbours


def _dense_reference(q, k, v, grid, window, stride, dilation):
    """Masked softmax attention in float64 with the mask built by enumeration."""
    per_dim = [_window_by_enumeration(*a) for a in zip(grid, window, stride, dilation)]
    coords = [(t, h, w) for t in range(grid[0]) for h in range(grid[1]) for w in range(grid[2])]
    mask = torch.tensor([[all(kc[i] in per_dim[i][qc[i]] for i in range(3)) for kc in coords] for qc in coords])
    scores = torch.einsum("blhd,bmhd->bhlm", q.double(), k.double()) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.einsum("bhlm,bmhd->blhd", weights, v.double())


@pytest.mark.parametrize("n,k,s,d", [(44, 4, 1, 11), (80, 16, 1, 5), (44, 12, 4, 1), (80, 24, 8, 1), (80, 40, 8, 1),
                                     (44, 28, 4, 1), (80, 56, 8, 1), (80, 16, 1, 5), (24, 24, 1, 1), (7, 3, 2, 2),
                                     (10, 2, 3, 3), (9, 5, 5, 1), (13, 4, 2, 3)])
def test_the_one_dimensional_mask_matches_the_definition(n, k, s, d):
    mask = neighborhood_mask_1d(n, k, s, d)
    expected = _window_by_enumeration(n, k, s, d)
    assert [set(torch.nonzero(row).flatten().tolist()) for row in mask] == expected


def _qkv(grid, heads=2, dim=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, math.prod(grid), heads, dim, generator=g, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("grid,params,kernel", [
    ((2, 6, 8), {"window_size": (-1, 2, 4), "dilation": (1, 3, 2)}, "dense-groups"),
    ((2, 8, 8), {"window_size": (-1, 4, 4), "stride": (1, 2, 2)}, "flex"),
    ((3, 6, 10), {"window_size": (-1, 3, 2), "stride": (1, 2, 1), "dilation": (1, 1, 5)}, "flex"),
    ((2, 7, 9), {"window_size": (-1, 3, 3), "stride": (1, 2, 1), "dilation": (1, 2, 3)}, "flex"),  # unequal groups
])
def test_neighborhood_attention_equals_dense_attention_with_the_mask(grid, params, kernel):
    q, k, v = _qkv(grid)
    layer = NeighborhoodAttention(params)
    window, stride, dilation = layer.params.resolve(grid)
    assert layer.kernel(grid, q) == kernel
    out = layer(q, k, v, video_size=grid)
    torch.testing.assert_close(out, _dense_reference(q, k, v, grid, window, stride, dilation), rtol=1e-9, atol=1e-9)


def test_every_released_layer_configuration_scaled_to_a_small_grid():
    """Each distinct window configuration of the 2B and 14B NATTEN tables, through base_size scaling to a small
    grid (as the reference scales them for other resolutions), equals masked dense attention."""
    grid = (2, 11, 20)
    configs = {repr(p): p for table in NATTEN_PARAMETERS.values() for p in table if p is not None}
    assert len(configs) == 5
    for params in configs.values():
        q, k, v = _qkv(grid, seed=3)
        layer = NeighborhoodAttention(params)
        window, stride, dilation = layer.params.resolve(grid)
        expected = _dense_reference(q, k, v, grid, window, stride, dilation)
        torch.testing.assert_close(layer(q, k, v, video_size=grid), expected, rtol=1e-9, atol=1e-9)


def test_the_released_tables_at_720p():
    assert len(natten_parameters_for("2B")) == 28 and len(natten_parameters_for("14B")) == 36
    assert natten_parameters_for("14B")[27] is None  # the one dense layer of 14B
    grid = (24, 44, 80)  # 93 frames at 704x1280
    for size in ("2B", "14B"):  # with FlashAttention-4 at inference, no layer needs FlexAttention
        kernels = {NeighborhoodAttention(p).kernel(grid) for p in natten_parameters_for(size) if p is not None}
        assert kernels == {"dense-groups", "fa4-block-sparse"}, size
        q = torch.empty(1, 1, 1, 128)
        assert {NeighborhoodAttention(p).kernel(grid, q) for p in natten_parameters_for(size) if p} == \
            {"dense-groups", "flex"}  # on CPU
    assert NeighborhoodAttention(natten_parameters_for("2B")[3]).kernel(grid, needs_grad=True) == "flex"
    params = NeighborhoodParams.from_dict(natten_parameters_for("2B")[0])
    assert params.resolve(grid) == ((24, 4, 16), (1, 1, 1), (1, 11, 5))  # sparse global over H and W
    with pytest.raises(ValueError, match="no NATTEN variant of the 0.6B"):
        natten_parameters_for("0.6B")


@pytest.mark.parametrize("grid,window,stride,dilation,whole", [
    ((8, 8, 16), (8, 4, 8), (1, 4, 8), (1, 1, 1), True),   # windows start and end on tile edges
    ((8, 8, 16), (8, 4, 8), (1, 4, 4), (1, 1, 1), False),  # stride 4 moves the 8-wide window by half a tile
    ((8, 8, 16), (8, 8, 4), (1, 1, 4), (1, 1, 1), True),
    ((8, 8, 16), (4, 4, 4), (1, 4, 4), (1, 1, 1), False),  # a 4-frame window cuts the 8-frame tiles
    ((8, 8, 16), (8, 4, 8), (1, 1, 1), (1, 1, 2), False),  # dilation interleaves the tiles
])
def test_whole_tiles_match_the_brute_force_mask(grid, window, stride, dilation, whole):
    """The tile-pair map that the block-sparse kernel visits, against the [L, L] mask cut into 128-token tiles."""
    from cosmos_predict2.networks.neighborhood import _TILE_TOKENS, _tile_order, _tile_shape, _whole_tiles

    order = _tile_order(grid, _tile_shape(grid), None)
    mask = neighborhood_mask(grid, window, stride, dilation)[order][:, order]
    M = mask.shape[0] // _TILE_TOKENS
    blocks = mask.reshape(M, _TILE_TOKENS, M, _TILE_TOKENS).transpose(1, 2)
    exact = bool((blocks.all(-1).all(-1) | ~blocks.any(-1).any(-1)).all())
    pairs = _whole_tiles(grid, window, stride, dilation)
    assert exact == whole and (pairs is not None) == whole
    if whole:
        assert torch.equal(pairs, blocks.all(-1).all(-1)) and pairs.any(1).all()


def test_the_block_sparse_path_hands_the_kernel_the_attended_tiles(monkeypatch):
    """The FA4 path end to end with a CPU stand-in for FA4's block-sparse kernel that computes exactly what that
    kernel is documented to (query tile m attends key tiles index[m, :count[m]], entirely): the tile order, the
    block lists and the way back to the grid's order give the definition's attention."""
    from cosmos_predict2.networks import neighborhood

    def blocks_attention(q, k, v, count, index, block):
        M = q.shape[1] // block
        tiles = torch.zeros(M, M, dtype=torch.bool)
        for m in range(M):
            tiles[m, index[0, 0, m, :count[0, 0, m]].long()] = True
        mask = tiles.repeat_interleave(block, 0).repeat_interleave(block, 1)
        scores = torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(q.shape[-1])
        return torch.einsum("bhlm,bmhd->blhd", torch.softmax(scores.masked_fill(~mask, float("-inf")), -1), v)

    monkeypatch.setattr(neighborhood, "block_sparse_attention_runs", lambda q, needs_grad: not needs_grad)
    monkeypatch.setattr(neighborhood, "block_sparse_attention", blocks_attention)
    grid = (8, 8, 16)
    for params in ({"window_size": (-1, 4, 8), "stride": (1, 4, 8)},
                   {"window_size": (-1, 4, 8), "stride": (1, 4, 1), "dilation": (1, 1, 2)}):  # a folded group
        layer = NeighborhoodAttention(params)
        q, k, v = _qkv(grid, seed=11)
        assert layer.kernel(grid, q) == "fa4-block-sparse", params
        expected = _dense_reference(q, k, v, grid, *layer.params.resolve(grid))
        torch.testing.assert_close(layer(q, k, v, video_size=grid), expected, rtol=1e-9, atol=1e-9)


def test_gradients_flow_through_both_kernels():
    for grid, params in (((2, 6, 8), {"window_size": (-1, 2, 4), "dilation": (1, 3, 2)}),
                         ((2, 8, 8), {"window_size": (-1, 4, 4), "stride": (1, 2, 2)})):
        q, k, v = (t.requires_grad_() for t in _qkv(grid, seed=5))
        layer = NeighborhoodAttention(params)
        window, stride, dilation = layer.params.resolve(grid)
        grads = torch.autograd.grad(layer(q, k, v, video_size=grid).square().sum(), (q, k, v))
        ref = _dense_reference(q, k, v, grid, window, stride, dilation)
        expected = torch.autograd.grad(ref.square().sum(), (q, k, v))
        for a, b in zip(grads, expected):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_a_single_frame_runs_dense_attention_as_the_reference():
    grid = (1, 4, 8)
    q, k, v = _qkv(grid)
    out = NeighborhoodAttention({"window_size": (-1, 2, 2)})(q, k, v, video_size=grid)
    dense = torch.softmax(torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(8), -1)
    torch.testing.assert_close(out, torch.einsum("bhlm,bmhd->blhd", dense, v))


def test_the_network_takes_the_reference_keyword_and_keeps_dense_layers_dense():
    params = [{"window_size": (-1, 2, 4), "stride": (1, 1, 2)}, None]
    net = randomize_(build_net("tiny", natten_parameters=params), seed=1).eval()
    dense = randomize_(build_net("tiny"), seed=1).eval()
    assert isinstance(net.blocks[0].self_attn.attention_fn, NeighborhoodAttention)
    assert net.blocks[1].self_attn.attention_fn is dense.blocks[1].self_attn.attention_fn
    assert net.state_dict().keys() == dense.state_dict().keys()  # same checkpoint keys as the dense model
    g = torch.Generator().manual_seed(0)
    x, t, ctx = torch.randn(1, 16, 3, 8, 12, generator=g), torch.rand(1, 3, generator=g), torch.randn(1, 7, 32)
    with torch.no_grad():
        sparse_out, dense_out = net(x, t, ctx), dense(x, t, ctx)
    assert 0 < (sparse_out - dense_out).abs().max() < sparse_out.abs().max()  # a real change, same scale
    with pytest.raises(ValueError, match="natten_parameters has 1 entries for 2 blocks"):
        build_net("tiny", natten_parameters=params[:1])


@pytest.mark.parametrize("flags,message", [
    (["--resolution", "480"], "--natten: the sparse-attention variants are 720p models"),
    (["--model_size", "tiny"], "--natten: there is no sparse-attention variant of the tiny model"),
])
def test_the_natten_flag_is_checked_before_any_model_loads(flags, message):
    from cosmos_predict2.inference import cli

    args = cli.build_parser(lora=False).parse_args(["--natten", "--disable_guardrail", "--disable_prompt_refiner",
                                                    *flags])
    with pytest.raises(cli.InferenceInputError, match=message):
        cli.check_request(args, lora=False)


def test_the_natten_flag_picks_the_released_sparse_checkpoint():
    from cosmos_predict2.inference.defaults import default_dit_path

    assert default_dit_path("14B", "720", 10, natten=True) == \
        "checkpoints/nvidia/Cosmos-Predict2-14B-Video2World/model-720p-10fps-natten.pt"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (compiled FlexAttention)")
def test_compiled_flex_kernel_on_gpu_matches_the_definition():
    """The CUDA path (compiled FlexAttention with tiles, dense groups through the fast kernel) in bf16 against the
    float64 definition: bf16 rounding of inputs and output (2^-8 relative) bounds the error."""
    grid = (4, 12, 16)
    for params in ({"window_size": (-1, 4, 8), "stride": (1, 2, 4)}, {"window_size": (-1, 4, 4), "dilation": (1, 3, 4)},
                   {"window_size": (-1, 6, 4), "stride": (1, 2, 1), "dilation": (1, 1, 4)}):
        q, k, v = (t.cuda() for t in _qkv(grid, heads=2, dim=64, seed=7))
        layer = NeighborhoodAttention(params)
        window, stride, dilation = layer.params.resolve(grid)
        out = layer(*(t.bfloat16() for t in (q, k, v)), video_size=grid)
        expected = _dense_reference(q.cpu(), k.cpu(), v.cpu(), grid, window, stride, dilation)
        assert (out.double().cpu() - expected).abs().max() < 0.03, params


def test_training_config_natten_builds_the_sparse_variant_and_records_it_as_part_of_the_base():
    """model.config.natten=true trains LoRA on the sparse variant: the network's self-attention follows the released
    table, the adapter's recorded base carries the table (inference rebuilds the same network from it), and the
    runtime-only checkpointing settings are not part of the recorded base."""
    from cosmos_predict2.configs.model_config import ModelConfigError
    from cosmos_predict2.training.model import Video2WorldModel, model_config_dict

    cfg = model_config_dict(model_size="2B", dit_path="", natten=True, train_architecture="lora",
                            selective_checkpoint_budget_gib=8.0)
    model = Video2WorldModel(cfg)
    net = model._meta_net()  # meta device: nothing allocated
    kinds = [isinstance(b.self_attn.attention_fn, NeighborhoodAttention) for b in net.blocks]
    assert kinds == [p is not None for p in natten_parameters_for("2B")] and any(kinds)
    assert net.selective_checkpoint_budget_gib == 8.0
    recorded = model.base_info()["net_config"]
    assert recorded["natten_parameters"] == natten_parameters_for("2B")
    assert "selective_checkpoint_budget_gib" not in recorded and "activation_checkpointing" not in recorded
    dense = Video2WorldModel(model_config_dict(model_size="2B", dit_path="", train_architecture="lora"))
    assert "natten_parameters" not in dense.base_info()["net_config"]
    with pytest.raises(ModelConfigError, match="model.config.natten=True: the NATTEN variants exist for"):
        Video2WorldModel(model_config_dict(model_size="tiny", natten=True))
    with pytest.raises(ModelConfigError, match="model.config.selective_checkpoint_budget_gib=-1"):
        Video2WorldModel(model_config_dict(selective_checkpoint_budget_gib=-1.0))


def _chunked_reference(q, k, v, grid, window, stride, dilation, chunk=2048):
    """Masked softmax attention in fp32 on the GPU, a query chunk at a time, the mask from the 1-D definitions
    (checked against enumeration above) on the grid's own t-major order: no folding, no tiles."""
    m_t, m_h, m_w = (neighborhood_mask_1d(*a, device=q.device) for a in zip(grid, window, stride, dilation))
    T, H, W = grid
    pos = torch.arange(math.prod(grid), device=q.device)
    t_of, h_of, w_of = pos // (H * W), (pos // W) % H, pos % W
    q, k, v = q.float(), k.float(), v.float()
    out = []
    for start in range(0, q.shape[1], chunk):
        rows = pos[start:start + chunk]
        mask = m_t[t_of[rows]][:, t_of] & m_h[h_of[rows]][:, h_of] & m_w[w_of[rows]][:, w_of]
        scores = torch.einsum("blhd,bmhd->bhlm", q[:, rows], k) / math.sqrt(q.shape[-1])
        out.append(torch.einsum("bhlm,bmhd->blhd", torch.softmax(scores.masked_fill(~mask, float("-inf")), -1), v))
    return torch.cat(out, dim=1)


def _fa4_block_sparse_available() -> bool:
    from cosmos_predict2.networks.attention import _fa4_block_sparse_forward

    return torch.cuda.is_available() and _fa4_block_sparse_forward() is not None


@pytest.mark.skipif(not _fa4_block_sparse_available(), reason="needs a CUDA GPU with FlashAttention-4")
def test_fa4_block_sparse_kernel_on_gpu_matches_the_definition():
    """Every distinct released layer at 720p's H x W (8 frames) through FA4's block-sparse forward in bf16, against
    the fp32 definition on the same bf16 inputs. Queries are scaled so that attention is peaked (flat attention
    would average the error away): bf16 output rounding is 2^-9 relative, accumulation adds a little, so 2^-7 of
    the output's range bounds it; dense attention over all keys must miss by far more (the mask matters)."""
    grid = (8, 44, 80)
    configs = {repr(p): p for table in NATTEN_PARAMETERS.values() for p in table if p is not None}
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, math.prod(grid), 2, 128, generator=g, device="cuda").bfloat16() for _ in range(3))
    q = (q.float() * 4).bfloat16()
    ran = 0
    for params in configs.values():
        layer = NeighborhoodAttention(params)
        if layer.kernel(grid, q) == "dense-groups":
            continue
        assert layer.kernel(grid, q) == "fa4-block-sparse", params
        with torch.no_grad():
            out = layer(q, k, v, video_size=grid).float()
        expected = _chunked_reference(q, k, v, grid, *layer.params.resolve(grid))
        error, scale = (out - expected).abs().max().item(), expected.abs().max().item()
        dense_miss = (attention(q, k, v).float() - expected).abs().max().item()
        assert error < scale * 2 ** -7 and dense_miss > 10 * error, (params, error, scale, dense_miss)
        ran += 1
    assert ran == 4


def test_the_benchmark_report_names_the_kernels_that_ran():
    from cosmos_predict2.networks.neighborhood import neighborhood_kernels_run

    params = [{"window_size": (-1, 2, 6), "dilation": (1, 2, 1)}, {"window_size": (-1, 2, 4), "stride": (1, 1, 2)}]
    net = randomize_(build_net("tiny", natten_parameters=params), seed=1).eval()
    assert neighborhood_kernels_run(net) == "not run x2"
    with torch.no_grad():
        net(torch.randn(1, 16, 3, 8, 12), torch.rand(1, 3), torch.randn(1, 7, 32))
    assert neighborhood_kernels_run(net) == "dense-groups x1, flex x1"  # on CPU
    assert neighborhood_kernels_run(randomize_(build_net("tiny"), seed=1)) == ""
