"""Neighborhood attention (the NATTEN variants) against an independent brute-force definition, on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from cosmos_predict2.networks import build_net
from cosmos_predict2.networks.neighborhood import (
    NATTEN_PARAMETERS,
    NeighborhoodAttention,
    NeighborhoodParams,
    natten_parameters_for,
    neighborhood_kernel,
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
    assert neighborhood_kernel(grid, window, dilation) == kernel
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
    kernels = {neighborhood_kernel(grid, *NeighborhoodParams.from_dict(p).resolve(grid)[::2])
               for p in natten_parameters_for("2B")}
    assert kernels == {"dense-groups", "flex"}
    params = NeighborhoodParams.from_dict(natten_parameters_for("2B")[0])
    assert params.resolve(grid) == ((24, 4, 16), (1, 1, 1), (1, 11, 5))  # sparse global over H and W
    with pytest.raises(ValueError, match="no NATTEN variant of the 0.6B"):
        natten_parameters_for("0.6B")


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
