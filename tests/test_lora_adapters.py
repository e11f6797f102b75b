"""LoRA via PEFT: trainable counts (docs/reference.md §7), base-model equivalence, adapter files and flag checks."""

from __future__ import annotations

import pytest
import torch

from cosmos_predict2.lora import (
    DEFAULT_TARGET_MODULES,
    LoraConfigError,
    LoraSpec,
    adapter_checkpoint,
    add_lora,
    is_adapter_checkpoint,
    load_adapter_weights,
    lora_state_dict,
    set_lora_scale,
    split_adapter_checkpoint,
)
from cosmos_predict2.networks import build_net, count_parameters
from cosmos_predict2.networks.weights import randomize_

TINY = dict(crossattn_emb_channels=32)


@pytest.mark.parametrize(
    "size,rank,targets,expected",
    [
        ("2B", 16, DEFAULT_TARGET_MODULES, 22_937_600),
        ("2B", 8, DEFAULT_TARGET_MODULES, 11_468_800),
        ("2B", 32, DEFAULT_TARGET_MODULES, 45_875_200),
        ("14B", 32, DEFAULT_TARGET_MODULES, 143_917_056),
        ("2B", 16, "q_proj,k_proj,v_proj,output_proj", 13_762_560),
    ],
)
def test_trainable_counts_on_meta(size, rank, targets, expected):
    net = build_net(size, device="meta", dtype=torch.bfloat16)
    add_lora(net, LoraSpec(rank, rank, targets))
    assert count_parameters(net, trainable_only=True) == expected
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert all(".lora_" not in n for n in frozen)
    assert "blocks.0.adaln_modulation_mlp.1.weight" in frozen and "final_layer.linear.weight" in frozen


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 16, 2, 4, 4, generator=g), torch.rand(1, 2, generator=g), torch.randn(1, 3, 32, generator=g)


def test_zero_lora_b_and_zero_scale_give_the_base_model_exactly():
    base = randomize_(build_net("tiny", **TINY), seed=0).eval()
    x, t, ctx = _inputs()
    with torch.no_grad():
        ref = base(x, t, ctx)
        net = add_lora(randomize_(build_net("tiny", **TINY), seed=0), LoraSpec(4, 8)).eval()
        assert torch.equal(net(x, t, ctx), ref)  # lora_B starts at zero
        for name, p in net.named_parameters():
            if ".lora_B." in name:
                p.normal_()
        assert not torch.allclose(net(x, t, ctx), ref)
        set_lora_scale(net, 0.0)
        assert torch.equal(net(x, t, ctx), ref)


def test_adapter_file_round_trip_and_flag_checks(tmp_path):
    net = add_lora(randomize_(build_net("tiny", **TINY), seed=0), LoraSpec(4, 8, "q_proj,mlp.layer1"))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".lora_" in name:
                p.normal_()
    sd = lora_state_dict(net)
    assert all(v.dtype == torch.float32 for v in sd.values())
    ckpt = adapter_checkpoint(sd, LoraSpec(4, 8, "q_proj,mlp.layer1"), {"model_size": "tiny"}, ema_lora=sd)
    torch.save(ckpt, tmp_path / "iter_000000010.pt")
    state = torch.load(tmp_path / "iter_000000010.pt", weights_only=True)
    assert is_adapter_checkpoint(state)
    spec, base, weights = split_adapter_checkpoint(state)
    assert (spec.rank, spec.alpha, spec.target_modules) == (4, 8, ["q_proj", "mlp.layer1"])
    other = add_lora(randomize_(build_net("tiny", **TINY), seed=0), spec)
    load_adapter_weights(other, weights, "iter_000000010.pt")
    x, t, ctx = _inputs()
    with torch.no_grad():
        assert torch.equal(other(x, t, ctx), net(x, t, ctx))

    spec.check_matches("f.pt", lora_rank=4, lora_alpha=8, lora_target_modules="mlp.layer1, q_proj")  # same set: fine
    with pytest.raises(LoraConfigError, match="--lora_alpha 16 but the adapter was trained with alpha 8"):
        spec.check_matches("f.pt", lora_alpha=16)
    with pytest.raises(LoraConfigError, match="--lora_rank 8"):
        spec.check_matches("f.pt", lora_rank=8)
    with pytest.raises(LoraConfigError, match="--lora_target_modules"):
        spec.check_matches("f.pt", lora_target_modules="q_proj")


def test_targets_matching_nothing_fail_before_any_work():
    with pytest.raises(LoraConfigError, match=r"No parameters found for LoRA adaptation.*\['qkv'\] match no Linear"):
        add_lora(build_net("2B", device="meta"), LoraSpec(16, 16, "qkv"))


def test_a_partial_match_warns_and_trains_the_matched_targets(caplog):
    """The guide's creative recipe adds norm1,norm2 (no Linear layer has those names): as the reference, the
    matched targets train and the others are reported (issue 12)."""
    net = build_net("2B", device="meta")
    with caplog.at_level("WARNING", logger="cosmos_predict2.lora.adapters"):
        add_lora(net, LoraSpec(16, 16, "q_proj,norm1,norm2"))
    assert "['norm1', 'norm2'] match no Linear layer of the network and are ignored" in caplog.text
    assert "valid targets: q_proj, k_proj" in caplog.text
    assert count_parameters(net, trainable_only=True) == count_parameters(
        add_lora(build_net("2B", device="meta"), LoraSpec(16, 16, "q_proj")), trainable_only=True)


def test_merging_adapters_gives_the_same_function_without_lora_layers():
    from cosmos_predict2.lora.adapters import merge_lora_

    net = add_lora(randomize_(build_net("tiny", **TINY), seed=0), LoraSpec(4, 8)).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".lora_" in name:
                p.normal_(std=0.1)
    set_lora_scale(net, 0.5)
    x, t, ctx = _inputs()
    with torch.no_grad():
        unmerged = net(x, t, ctx)
        merge_lora_(net)
        merged = net(x, t, ctx)
    assert not any(".lora_" in k or "base_layer" in k for k in net.state_dict())
    assert sorted(net.state_dict()) == sorted(build_net("tiny", **TINY).state_dict())
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)  # fp32: folding only reorders the sums


def _bf16_lora_net(keep_input_dtype: bool, dropout: float = 0.0, compute_dtype: str = "float32",
                   dtype: torch.dtype = torch.bfloat16, alpha: float = 4, device: str = "cpu"):
    net = randomize_(build_net("tiny", **TINY), seed=3).to(dtype)
    torch.manual_seed(0)
    add_lora(net, LoraSpec(4, alpha, DEFAULT_TARGET_MODULES, dropout=dropout), adapter_dtype=torch.float32,
             keep_input_dtype=keep_input_dtype, compute_dtype=compute_dtype)
    with torch.no_grad():  # lora_B = 0 at init would hide the down projections' gradient path through x
        for name, p in net.named_parameters():
            if ".lora_B." in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    return net.to(device)


def _loss_grads_and_saved_bytes(net, dtype: torch.dtype = torch.bfloat16, device: str = "cpu"):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 3, 8, 8, generator=g).to(device, dtype)
    t = torch.rand(1, 3, generator=g).to(device, dtype)
    ctx = torch.randn(1, 7, 32, generator=g).to(device, dtype)
    saved = {}  # storage pointer -> bytes: a tensor kept by several nodes counts once, as in memory
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}  # kept as such or as detached aliases

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in weights:
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = net(x, t, ctx).float().square().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad}
    return loss.detach(), grads, sum(saved.values())


def test_down_projections_keep_their_bf16_input_same_numbers_fewer_bytes():
    """The LoRA down projection keeps the bf16 input for its backward, not PEFT's fp32 copy: the loss and every
    adapter gradient are identical, and the activations autograd keeps shrink by the fp32 copies' bytes."""
    ours, peft_default = _bf16_lora_net(True), _bf16_lora_net(False)
    assert ours.state_dict().keys() == peft_default.state_dict().keys()  # same parameters, same keys
    loss, grads, saved = _loss_grads_and_saved_bytes(ours)
    ref_loss, ref_grads, ref_saved = _loss_grads_and_saved_bytes(peft_default)
    assert torch.equal(loss, ref_loss)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for name in grads:  # bitwise: a bf16 -> fp32 cast is exact and the matrix products are the same
        assert torch.equal(grads[name], ref_grads[name]), name
    # tiny block: dim 64, MLP 256, 8x8 patches of 2 -> 3x4x4 = 48 tokens; the fp32 copies of the adapted inputs
    # (self q/k/v share one, plus self/cross output_proj, cross q, mlp layer1 (64 wide) and layer2 (256 wide))
    # were 4 bytes per element; ours keep the bf16 originals (2 bytes) that other nodes mostly keep anyway
    assert saved < ref_saved * 0.8, (saved, ref_saved)
    lora_A = ours.blocks[0].mlp.layer2.lora_A["default"]
    assert type(lora_A).__name__ == "LoraDown" and lora_A.weight.dtype == torch.float32
    with_dropout = _bf16_lora_net(True, dropout=0.1)  # dropout acts on the input: PEFT's fp32 path is kept
    assert type(with_dropout.blocks[0].mlp.layer2.lora_A["default"]) is torch.nn.Linear


def _relative_errors(run, ref) -> tuple[float, float]:
    """(output/loss error, worst adapter-gradient error) of `run` against `ref`, both relative."""
    loss, grads, _ = run
    ref_loss, ref_grads, _ = ref
    grad_error = max(((grads[n].float() - ref_grads[n]).norm() / ref_grads[n].norm()).item() for n in ref_grads)
    return abs(loss.item() - ref_loss.item()) / abs(ref_loss.item()), grad_error


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"))])
def test_fused_adapters_compute_what_peft_computes(device):
    """The default adapters (`FusedLoraLinear`: base output += (x A^T)(scale B)^T in one step) against PEFT's own
    forward, with scale alpha/r = 1.75. In fp32 the two are the same sums in another order (tolerance: fp32
    rounding). In bf16 both carry the bf16 base's rounding; the fused path rounds the adapter products in bf16 too
    (the reference's bf16 parameters), so against the fp32 network its error must stay that of PEFT's bf16 path:
    the adapter's own rounding (2^-8 of a delta ~5% of the output) is far below the base's. On a GPU the bf16
    products are cuBLAS's (the up projection accumulating into the base output, beta = 1)."""
    # fp32 matmuls in full fp32 (PyTorch's default; TF32 would round the fp32 reference pair to 10 bits)
    assert torch.get_float32_matmul_precision() == "highest"
    fused32 = _bf16_lora_net(True, compute_dtype="base", dtype=torch.float32, alpha=7, device=device)
    assert type(fused32.blocks[0].self_attn.q_proj).__name__ == "FusedLoraLinear"
    ref = _loss_grads_and_saved_bytes(_bf16_lora_net(True, dtype=torch.float32, alpha=7, device=device),
                                      torch.float32, device)  # fmt: skip
    loss, grads, _ = _loss_grads_and_saved_bytes(fused32, torch.float32, device)
    torch.testing.assert_close(loss, ref[0], rtol=1e-5, atol=1e-6)
    for name in ref[1]:
        torch.testing.assert_close(grads[name], ref[1][name], rtol=1e-4, atol=1e-6, msg=name)

    fused16 = _loss_grads_and_saved_bytes(_bf16_lora_net(True, compute_dtype="base", alpha=7, device=device),
                                          device=device)  # fmt: skip
    peft16 = _loss_grads_and_saved_bytes(_bf16_lora_net(True, alpha=7, device=device), device=device)
    fused_loss_error, fused_grad_error = _relative_errors(fused16, ref)
    peft_loss_error, peft_grad_error = _relative_errors(peft16, ref)
    assert fused_loss_error <= 1.25 * peft_loss_error + 1e-3, (fused_loss_error, peft_loss_error)
    assert fused_grad_error <= 1.25 * peft_grad_error + 1e-3, (fused_grad_error, peft_grad_error)
    assert fused16[2] <= peft16[2], (fused16[2], peft16[2])  # keeps no more for the backward than LoraDown's path


def test_fused_adapters_fall_back_to_peft_where_they_do_not_apply():
    """Dropout, disabled or merged adapters and autocast take PEFT's forward; several active adapters are each
    added; scale 0 gives the base exactly."""
    from cosmos_predict2.lora import activate_adapters, merge_lora_

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 64, generator=g)

    def layer(dropout=0.0, compute_dtype="base"):
        torch.manual_seed(0)
        net = torch.nn.Sequential()
        net.add_module("q_proj", torch.nn.Linear(64, 32))
        add_lora(net, LoraSpec(4, 6, "q_proj", dropout=dropout), compute_dtype=compute_dtype)
        torch.nn.init.normal_(net.q_proj.lora_B["default"].weight, generator=torch.Generator().manual_seed(3))
        return net

    fused, peft_path = layer(), layer(compute_dtype="float32")
    assert type(fused.q_proj).__name__ == "FusedLoraLinear" and type(peft_path.q_proj).__name__ == "Linear"
    torch.testing.assert_close(fused(x), peft_path(x))
    with_dropout = layer(dropout=0.5).train()
    assert not with_dropout.q_proj._fusable(x, ["default"], (), {})
    torch.manual_seed(5)
    dropped = with_dropout(x)
    torch.manual_seed(5)
    torch.testing.assert_close(dropped, super(type(with_dropout.q_proj), with_dropout.q_proj).forward(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused.q_proj._fusable(x, ["default"], (), {})
        assert fused(x).dtype == torch.bfloat16
    for net in (fused, peft_path):  # a second adapter: both act, each added
        torch.manual_seed(1)  # lora_A's Kaiming init draws from the global generator
        add_lora(net, LoraSpec(2, 2, "q_proj"), adapter_name="second",
                 compute_dtype="base" if net is fused else "float32")  # fmt: skip
        torch.nn.init.normal_(net.q_proj.lora_B["second"].weight, generator=torch.Generator().manual_seed(4))
        activate_adapters(net, ["default", "second"])
    torch.testing.assert_close(fused(x), peft_path(x))
    base = torch.nn.functional.linear(x, fused.q_proj.base_layer.weight, fused.q_proj.base_layer.bias)
    fused.q_proj.enable_adapters(False)
    assert not fused.q_proj._fusable(x, ["default"], (), {}) and torch.equal(fused(x), base)
    fused.q_proj.enable_adapters(True)
    set_lora_scale(fused, 0.0)
    set_lora_scale(fused, 0.0, adapter_name="second")
    assert torch.equal(fused(x), base)
    set_lora_scale(fused, 1.0)
    expected = fused(x)
    fused.q_proj.merge()  # PEFT's in-place merge: the base alone then
    assert fused.q_proj.merged and not fused.q_proj._fusable(x, ["default"], (), {})
    torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)
    expected = peft_path(x)
    merge_lora_(peft_path)
    torch.testing.assert_close(peft_path(x), expected, rtol=1e-5, atol=1e-5)


def test_lora_compute_dtype_is_a_checked_model_config_field():
    from cosmos_predict2.configs.model_config import ModelConfigError, model_config_dict, parse_model_config

    assert parse_model_config(model_config_dict(train_architecture="lora")).lora_compute_dtype == "base"
    with pytest.raises(ModelConfigError, match="lora_compute_dtype.*base.*float32"):
        parse_model_config(model_config_dict(train_architecture="lora", lora_compute_dtype="bf16"))


def test_base_and_adapter_in_one_function_have_the_closed_form_gradients():
    """`_LinearWithLora` (the base Linear and its first adapter in one autograd node, the input gradient formed in
    one buffer) against autograd's numerical gradients in float64: input, base weight, bias, A and B."""
    from cosmos_predict2.lora.adapters import _LinearWithLora

    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in ((2, 3, 6), (5, 6), (5,)))
    a, up = (torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in ((2, 6), (5, 2)))
    assert torch.autograd.gradcheck(lambda *t: _LinearWithLora.apply(*t, 1.75), (x, w, b, a, up))
    assert torch.autograd.gradcheck(lambda *t: _LinearWithLora.apply(t[0], t[1], None, t[2], t[3], 0.5),
                                    (x, w.detach(), a, up))  # fmt: skip
    # gelu_input: the layer of GELU(x), keeping x and not GELU(x) for the backward
    assert torch.autograd.gradcheck(lambda *t: _LinearWithLora.apply(*t, 1.75, True), (x, w, b, a, up))
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        y = _LinearWithLora.apply(x, w.detach(), None, a, up, 1.75, True)
    torch.testing.assert_close(y, torch.nn.functional.gelu(x) @ w.T + torch.nn.functional.gelu(x) @ a.T @ up.T * 1.75)
    assert any(t is x for t in kept) and not any(torch.equal(t, torch.nn.functional.gelu(x)) for t in kept)


def test_gelu_input_falls_back_to_gelu_then_the_layer():
    """`layer(x, gelu_input=True)` is `layer(GELU(x))` also where the fused function does not apply (two active
    adapters, PEFT's path) and without grad; the MLP of networks/dit.py calls it so."""
    from cosmos_predict2.lora import activate_adapters

    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("layer2", torch.nn.Linear(16, 8, bias=False))
    add_lora(net, LoraSpec(4, 4, "layer2"), compute_dtype="base")
    torch.nn.init.normal_(net.layer2.lora_B["default"].weight, generator=torch.Generator().manual_seed(3))
    layer = net.layer2
    torch.testing.assert_close(layer(x, gelu_input=True), layer(torch.nn.functional.gelu(x)))
    with torch.no_grad():
        torch.testing.assert_close(layer(x, gelu_input=True), layer(torch.nn.functional.gelu(x)))
    add_lora(net, LoraSpec(2, 2, "layer2"), adapter_name="second", compute_dtype="base")
    torch.nn.init.normal_(layer.lora_B["second"].weight, generator=torch.Generator().manual_seed(4))
    activate_adapters(net, ["default", "second"])
    torch.testing.assert_close(layer(x, gelu_input=True), layer(torch.nn.functional.gelu(x)))
    assert getattr(torch.nn.Linear(2, 2), "takes_gelu_input", False) is False  # a plain Linear gets GELU(x)


def test_fused_adapters_leave_hooked_base_layers_their_own_call():
    """A base Linear with forward hooks (fp8 storage upcasts its weight in them) keeps its own call: the hooks run
    and the adapter is added after; a plain one is fused. Both give PEFT's output."""
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    outputs, calls = [], []
    for hooked in (False, True):
        torch.manual_seed(0)
        net = torch.nn.Sequential()
        net.add_module("q_proj", torch.nn.Linear(16, 8, bias=False))
        add_lora(net, LoraSpec(4, 4, "q_proj"), compute_dtype="base")
        torch.nn.init.normal_(net.q_proj.lora_B["default"].weight, generator=torch.Generator().manual_seed(3))
        if hooked:
            net.q_proj.base_layer.register_forward_pre_hook(lambda m, a: calls.append(m))
        assert net.q_proj._plain_base(x) is not hooked
        outputs.append(net(x))
    assert len(calls) == 1
    torch.testing.assert_close(outputs[0], outputs[1])
