"""The Video2World DiT against diffusers' CosmosTransformer3DModel, weight IO round trips, sizes and names."""

from __future__ import annotations

import pytest
import torch

from cosmos_predict2.io import CheckpointFileError
from cosmos_predict2.networks import (
    EXPECTED_PARAMETERS,
    CheckpointMismatchError,
    build_net,
    count_parameters,
    load_dit_weights,
    load_reference_weights,
    save_diffusers,
)
from cosmos_predict2.networks.weights import (
    diffusers_config,
    from_diffusers_name,
    randomize_,
    to_diffusers_state_dict,
)
from testing_support.diffusers_compat import NEAREST_RESIZE_SHIM

TINY = dict(crossattn_emb_channels=32)


def _patch_diffusers_torchvision(monkeypatch):
    import diffusers.models.transformers.transformer_cosmos as tc

    monkeypatch.setattr(tc, "transforms", NEAREST_RESIZE_SHIM, raising=False)


def _diffusers_model(net):
    from diffusers import CosmosTransformer3DModel

    cfg = {k: v for k, v in diffusers_config(net).items() if not k.startswith("_")}
    model = CosmosTransformer3DModel(**cfg)
    missing, unexpected = model.load_state_dict(to_diffusers_state_dict(net.state_dict()), strict=True)
    for module in model.modules():  # diffusers' q/k RMSNorm eps is 1e-5; the reference uses 1e-6 (docs/reference.md §1)
        if module.__class__.__name__ == "RMSNorm":
            module.eps = 1e-6
    return model.eval()


def _inputs(batch: int, T: int = 3, H: int = 8, W: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, T, H, W, generator=g)
    t = torch.rand(batch, T, generator=g)  # different timestep per frame
    ctx = torch.randn(batch, 7, 32, generator=g)
    cond = torch.zeros(batch, 1, T, H, W)
    cond[:, :, :1] = 1.0  # first latent frame is conditioning
    padding = torch.zeros(1, 1, H * 8, W * 8)
    return x, t, ctx, cond, padding


@pytest.mark.parametrize("batch", [1, 2])
def test_matches_diffusers_fp32(monkeypatch, batch):
    _patch_diffusers_torchvision(monkeypatch)
    torch.manual_seed(0)
    net = randomize_(build_net("tiny", **TINY), seed=1).eval()
    ref = _diffusers_model(net)
    x, t, ctx, cond, padding = _inputs(batch)
    with torch.no_grad():
        ours = net(x, t, ctx, cond, fps=None, padding_mask=padding)
        theirs = ref(
            hidden_states=x,
            timestep=t[:, None, :, None, None],
            encoder_hidden_states=ctx,
            condition_mask=cond,
            padding_mask=padding,
            fps=None,
            return_dict=False,
        )[0]
    assert ours.shape == (batch, 16, *x.shape[2:])
    rel = (ours - theirs).abs().max() / theirs.abs().max()
    # fp32 end to end: only summation order differs (SDPA kernels, fused norms), ~1e-7 per op.
    assert rel < 1e-5, rel
    assert theirs.abs().max() > 0.1  # a real signal, not a comparison of zeros


def test_rope_follows_spec_formula():
    net = build_net("2B", device="meta")
    rope = net.pos_embedder
    assert (rope.dim_t, rope.dim_h, rope.dim_w) == (44, 42, 42)
    ang = rope.angles(T=3, H=4, W=5, device=torch.device("cpu"))
    assert ang.shape == (60, 128)
    theta_h = 10000 * 3.0 ** (42 / 40)
    token = 1 * 20 + 2 * 5 + 3  # t=1, h=2, w=3
    j = torch.arange(21, dtype=torch.float64)
    expected_h = 2 * theta_h ** (-2 * j / 42)
    torch.testing.assert_close(ang[token, 22:43].double(), expected_h, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ang[token, :22].double(), 1 * 10000 ** (-2 * torch.arange(22.0).double() / 44))
    torch.testing.assert_close(ang[token, 64:], ang[token, :64])


def test_meta_parameter_counts_and_names():
    for size, expected in EXPECTED_PARAMETERS.items():
        net = build_net(size, device="meta", dtype=torch.bfloat16)
        assert count_parameters(net) == expected
        assert all(p.is_meta for p in net.parameters())
    keys = list(build_net("2B", device="meta").state_dict())
    assert len(keys) == 4 + 28 * 20 + 3
    for name in [
        "x_embedder.proj.1.weight",
        "t_embedder.1.linear_1.weight",
        "t_embedder.1.linear_2.weight",
        "t_embedding_norm.weight",
        "blocks.0.self_attn.q_proj.weight",
        "blocks.27.self_attn.output_proj.weight",
        "blocks.3.cross_attn.k_norm.weight",
        "blocks.3.mlp.layer1.weight",
        "blocks.3.mlp.layer2.weight",
        "blocks.5.adaln_modulation_cross_attn.2.weight",
        "final_layer.linear.weight",
        "final_layer.adaln_modulation.2.weight",
    ]:
        assert name in keys
    shapes = build_net("2B", device="meta").state_dict()
    assert tuple(shapes["x_embedder.proj.1.weight"].shape) == (2048, 72)
    assert tuple(shapes["blocks.0.cross_attn.k_proj.weight"].shape) == (2048, 1024)
    assert tuple(shapes["final_layer.adaln_modulation.2.weight"].shape) == (4096, 256)


def _reference_file(tmp_path, net, prefix="net.", extra=None):
    sd = {prefix + k: v.to(torch.bfloat16) for k, v in net.state_dict().items()}
    sd[prefix + "pos_embedder.seq"] = torch.arange(10.0)  # reference buffers are ignored on load
    sd[prefix + "accum_video_sample_counter"] = torch.tensor(3)
    sd.update(extra or {})
    path = tmp_path / "model.pt"
    torch.save(sd, path)
    return path


def test_reference_pt_to_diffusers_round_trip(tmp_path, monkeypatch):
    _patch_diffusers_torchvision(monkeypatch)
    src = randomize_(build_net("tiny", **TINY), seed=2)
    path = _reference_file(tmp_path, src)
    net = load_reference_weights(build_net("tiny", device="meta", **TINY), path, dtype=torch.float32)
    assert not any(p.is_meta for p in net.parameters())
    for k, v in src.state_dict().items():
        assert torch.equal(net.state_dict()[k], v.to(torch.bfloat16).float())

    folder = save_diffusers(net, tmp_path / "transformer", dtype=torch.float32)
    from diffusers import CosmosTransformer3DModel

    ref = CosmosTransformer3DModel.from_pretrained(folder).eval()
    for module in ref.modules():
        if module.__class__.__name__ == "RMSNorm":
            module.eps = 1e-6
    back = load_dit_weights(build_net("tiny", device="meta", **TINY), tmp_path, dtype=torch.float32)
    x, t, ctx, cond, padding = _inputs(1)
    with torch.no_grad():
        a = net(x, t, ctx, cond, padding_mask=padding)
        b = ref(x, t[:, None, :, None, None], ctx, condition_mask=cond, padding_mask=padding, return_dict=False)[0]
        c = back(x, t, ctx, cond, padding_mask=padding)
    assert torch.equal(a, c)
    assert (a - b).abs().max() / b.abs().max() < 1e-5


def test_ema_prefix_and_name_maps(tmp_path):
    src = randomize_(build_net("tiny", **TINY), seed=3)
    path = _reference_file(tmp_path, src, prefix="net_ema.")
    net = load_reference_weights(build_net("tiny", device="meta", **TINY), path, prefix="net_ema.")
    assert torch.equal(net.final_layer.linear.weight, src.final_layer.linear.weight.to(torch.bfloat16).float())
    for name in src.state_dict():
        assert from_diffusers_name(to_diffusers_state_dict({name: 0}).popitem()[0]) == name


def test_mismatch_errors_list_offending_keys(tmp_path):
    src = build_net("tiny", **TINY)
    sd = {"net." + k: v for k, v in src.state_dict().items()}
    del sd["net.blocks.1.mlp.layer2.weight"]
    sd["net.blocks.0.extra.weight"] = torch.zeros(3)
    sd["net.final_layer.linear.weight"] = torch.zeros(5, 5)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_reference_weights(build_net("tiny", device="meta", **TINY), path)
    msg = str(err.value)
    assert "bad.pt" in msg
    assert "missing keys (1): blocks.1.mlp.layer2.weight" in msg
    assert "unexpected keys (1): blocks.0.extra.weight" in msg
    assert "final_layer.linear.weight (file (5, 5), model (64, 64))" in msg


def test_lora_checkpoint_given_to_base_loader_says_so(tmp_path):
    src = build_net("tiny", **TINY)
    sd = {"net." + k: v for k, v in src.state_dict().items()}
    w = sd.pop("net.blocks.0.self_attn.q_proj.weight")
    sd["net.blocks.0.self_attn.q_proj.base_layer.weight"] = w
    sd["net.blocks.0.self_attn.q_proj.lora_A.default.weight"] = torch.zeros(4, 64)
    path = tmp_path / "lora_full.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError, match="video2world_lora.py"):
        load_reference_weights(build_net("tiny", device="meta", **TINY), path)


def test_unsafe_pickle_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"net.x": Evil()}, path)
    with pytest.raises(CheckpointFileError, match="cannot be loaded safely"):  # the one safe loader's error
        load_reference_weights(build_net("tiny", device="meta", **TINY), path)


def test_bf16_forward_close_to_fp32():
    net = randomize_(build_net("tiny", **TINY), seed=4).eval()
    x, t, ctx, cond, padding = _inputs(2)
    with torch.no_grad():
        ref = net(x, t, ctx, cond)
        out = net.to(torch.bfloat16)(x, t, ctx, cond).float()
    # bf16 has an 8-bit mantissa (~4e-3 relative per op); two blocks of residual updates stay within a few %.
    assert ((out - ref).norm() / ref.norm()) < 3e-2


@pytest.mark.parametrize("mode", ["full", "selective", "nested"])
def test_activation_checkpointing_same_gradients(mode):
    x, t, ctx, cond, _ = _inputs(1)
    grads = []
    for ckpt in ("none", mode):
        net = randomize_(build_net("tiny", activation_checkpointing=ckpt, **TINY), seed=5)
        net(x, t, ctx, cond).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_fused_elementwise_path_matches_eager():
    """The torch.compile'd elementwise chains (default on CUDA) compute the same function as the eager code."""
    from cosmos_predict2.networks.fused import set_fuse_elementwise

    net = randomize_(build_net("tiny", **TINY), seed=6).eval()
    x, t, ctx, cond, _ = _inputs(1)
    with torch.no_grad():
        eager = net(x, t, ctx, cond)
        set_fuse_elementwise(True)
        try:
            fused = net(x, t, ctx, cond)
        finally:
            set_fuse_elementwise("auto")
    assert (fused - eager).abs().max() / eager.abs().max() < 1e-5


def test_shared_input_repeats_equals_the_plain_guidance_batch():
    """A guidance batch cat([x, x]) with two texts: computing the text-independent first layers once gives the
    plain batch's output (fp32: only the rounding of batch-1 vs batch-2 matmuls may differ)."""
    net = randomize_(build_net("tiny", **TINY), seed=8).eval()
    x1, t1, _, cond1, padding = _inputs(2, seed=1)  # two distinct samples, each under two texts
    ctx = torch.randn(4, 7, 32, generator=torch.Generator().manual_seed(2))
    x, t, cond = x1.repeat(2, 1, 1, 1, 1), t1.repeat(2, 1), cond1.repeat(2, 1, 1, 1, 1)
    with torch.no_grad():
        plain = net(x, t, ctx, cond, padding_mask=padding)
        shared = net(x, t, ctx, cond, padding_mask=padding, shared_input_repeats=2)
    assert shared.shape == plain.shape == (4, 16, 3, 8, 12)
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-5)
    assert (plain[0] - plain[2]).abs().max() > 1e-3  # the texts do matter, so rows were not mixed up
    with pytest.raises(ValueError, match="shared_input_repeats=3"):
        net(x, t, ctx, cond, shared_input_repeats=3)


def test_bf16_rope_angles_option_reproduces_the_reference_rounding():
    exact = build_net("2B", device="meta").pos_embedder
    ref = build_net("2B", device="meta", rope_angles_dtype="bfloat16").pos_embedder
    cpu = torch.device("cpu")
    a, b = exact.angles(2, 44, 80, cpu), ref.angles(2, 44, 80, cpu)
    j = torch.arange(0, 42, 2, dtype=torch.float32)[:21] / 42
    inv_freq_bf16 = 1.0 / ref.h_theta ** j.to(torch.bfloat16)
    expected_h = torch.outer(torch.arange(44.0).to(torch.bfloat16), inv_freq_bf16).float()
    h_of_token = b.reshape(2, 44, 80, 128)[0, :, 0, 22:43]
    assert torch.equal(h_of_token, expected_h)
    assert 0.05 < (a - b).abs().max() < 0.5  # bf16 spacing at positions 32-80


def test_reference_only_knobs_accepted_unknown_keywords_refused():
    build_net("tiny", device="meta", atten_backend="minimal_a2a", **TINY)  # reference-only, no effect on the math
    with pytest.raises(TypeError, match=r"\['num_blokcs'\]"):
        build_net("tiny", device="meta", num_blokcs=3, **TINY)


def test_weights_are_cast_and_placed_tensor_by_tensor_on_the_target_device(tmp_path, monkeypatch):
    """`device=`: each tensor of the memory-mapped file goes to the device with its cast in one `.to` (no host-side
    cast of the whole network: a 14B fp32 full fine-tuning start would need 57 GB of host RAM for it)."""
    src = randomize_(build_net("tiny", **TINY), seed=2)
    path = _reference_file(tmp_path, src)
    moves = []
    original_to = torch.Tensor.to

    def recording_to(self, *args, **kwargs):
        casts = [a for a in (*args, kwargs.get("dtype")) if isinstance(a, torch.dtype)]
        moves.append((kwargs.get("device"), casts[0] if casts else None))
        return original_to(self, *args, **kwargs)

    meta_net = build_net("tiny", device="meta", **TINY)
    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    net = load_dit_weights(meta_net, path, dtype=torch.float32, device="cpu")
    monkeypatch.undo()
    combined = [m for m in moves if m == ("cpu", torch.float32)]
    assert len(combined) == len(src.state_dict())  # one combined move + cast per tensor
    assert not [m for m in moves if m[1] is not None and m[0] is None]  # and no separate cast on the host
    for k, v in src.state_dict().items():
        assert torch.equal(net.state_dict()[k], v.to(torch.bfloat16).float())
    on_meta = load_dit_weights(build_net("tiny", device="meta", **TINY), path, dtype=torch.float32, device="meta")
    assert all(p.is_meta and p.dtype == torch.float32 for p in on_meta.parameters())
