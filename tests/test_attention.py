"""The attention kernel switch: names, errors, which backend runs, and the math on CPU."""

import math
import os
import subprocess
import sys

import pytest
import torch

from cosmos_predict2.networks import attention as attn


@pytest.fixture(autouse=True)
def _restore_backend():
    before = attn.get_attention_backend()
    yield
    attn._backend = before


def test_attention_matches_softmax_formula():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 7, 3, 16, generator=g, dtype=torch.float64) for _ in range(3))
    out = attn.attention(q, k, v)
    weights = torch.softmax(torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(16), dim=-1)
    expected = torch.einsum("bhlm,bmhd->blhd", weights, v)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)  # float64: only rounding differs


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match="unknown attention backend 'flash3'.*best, fa4, cudnn"):
        attn.set_attention_backend("flash3")


def test_a_bad_environment_choice_fails_at_import_naming_the_variable():
    env = {**os.environ, "COSMOS_ATTN_BACKEND": "flash3"}
    proc = subprocess.run([sys.executable, "-c", "import cosmos_predict2.networks"], env=env, capture_output=True,
                          text=True)
    assert proc.returncode != 0 and "COSMOS_ATTN_BACKEND: unknown attention backend 'flash3'" in proc.stderr


def test_fa4_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(attn, "_fa4_function", lambda: None)
    with pytest.raises(ValueError, match="pip install flash-attn-4"):
        attn.set_attention_backend("fa4")


def test_cpu_inputs_leave_the_choice_to_pytorch():
    q = torch.randn(1, 4, 2, 8)
    for name in ("best", "cudnn", "math"):
        attn.set_attention_backend(name)
        assert attn.resolved_attention_backend(q) == "auto"


def test_best_prefers_fa4_only_where_it_runs(monkeypatch):
    monkeypatch.setattr(attn, "_fa4_function", lambda: None)
    monkeypatch.setattr(attn, "_fa4_supports", lambda q: True)
    fake_cuda = torch.empty(0)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    attn.set_attention_backend("best")
    assert attn.resolved_attention_backend(fake_cuda) == "cudnn"  # not installed
    monkeypatch.setattr(attn, "_fa4_function", lambda: object())
    assert attn.resolved_attention_backend(fake_cuda) == "fa4"  # for training too: the custom op has a backward
    attn.set_attention_backend("fa4")
    assert attn.resolved_attention_backend(fake_cuda) == "fa4"
    monkeypatch.setattr(attn, "_fa4_supports", lambda q: False)  # e.g. fp32 or a pre-Hopper GPU
    assert attn.resolved_attention_backend(fake_cuda) == "cudnn"
    attn.set_attention_backend("best")
    assert attn.resolved_attention_backend(fake_cuda) == "cudnn"
    attn.set_attention_backend("cudnn")
    monkeypatch.setattr(attn, "_fa4_supports", lambda q: True)
    assert attn.resolved_attention_backend(fake_cuda) == "cudnn"


def test_fa4_supports_needs_a_half_precision_cuda_tensor():
    assert not attn._fa4_supports(torch.randn(1, 4, 2, 8, dtype=torch.bfloat16))  # CPU


@pytest.mark.skipif(not torch.cuda.is_available() or attn._fa4_function() is None,
                    reason="needs a CUDA GPU (sm90+) with flash-attn-4 installed")
def test_fa4_matches_cudnn_on_gpu():
    """FA4 and cuDNN against an fp32 reference: forward and gradients, bf16 inputs at a DiT-like shape."""
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("FA4 runs on sm90 and newer")
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4096, 16, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    grad_out = torch.randn(2, 4096, 16, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    ref_q, ref_k, ref_v = (t.double().requires_grad_() for t in (q, k, v))
    attn.set_attention_backend("math")
    ref = attn.attention(ref_q, ref_k, ref_v)
    ref_grads = torch.autograd.grad(ref, (ref_q, ref_k, ref_v), grad_out.double())
    errors = {}
    for name in ("cudnn", "fa4"):
        attn.set_attention_backend(name)
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        assert attn.resolved_attention_backend(qq) == name
        out = attn.attention(qq, kk, vv)
        grads = torch.autograd.grad(out, (qq, kk, vv), grad_out)
        errors[name] = [(a.double() - b).abs().max().item() for a, b in zip((out, *grads), (ref, *ref_grads))]
    # bf16 output rounding (2^-8 relative) dominates both kernels; FA4 may not be worse than cuDNN by more than 2x
    for fa4_err, cudnn_err in zip(errors["fa4"], errors["cudnn"]):
        assert fa4_err <= 2 * cudnn_err + 1e-3, errors


def test_fa4_forward_tile_table_applies_to_the_measured_shape_on_hopper_only():
    """The tile table (attention.FA4_SM90_FORWARD_TILES, from benchmarks/bench_fa4_tiles.py) is keyed by the exact q
    shape it was measured at, on sm90: the 2B 480p guidance batch; training's batch 1, 720p, 14B's 40 heads and other
    GPUs keep FA4's default."""
    assert attn.fa4_forward_tile((2, 31104, 16, 128), (9, 0)) == (128, 144)
    for shape in ((1, 31104, 16, 128), (2, 84480, 16, 128), (2, 31104, 40, 128)):
        assert attn.fa4_forward_tile(shape, (9, 0)) is None, shape
    assert attn.fa4_forward_tile((2, 31104, 16, 128), (10, 0)) is None


@pytest.mark.skipif(not torch.cuda.is_available() or attn._fa4_function() is None,
                    reason="needs a CUDA GPU (sm90+) with flash-attn-4 installed")
def test_fa4_tabled_tile_matches_the_default_tile_on_gpu():
    """At the tabled 480p shape the forward with the tabled tile equals FA4's default tile to bf16 rounding."""
    from flash_attn.cute.interface import _flash_attn_fwd

    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the table is for sm90")
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 31104, 16, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    out, lse = attn._fa4_kernels()[0](q, k, v)
    default_out, default_lse, *_ = _flash_attn_fwd(q, k, v, return_lse=True)
    torch.testing.assert_close(out, default_out, rtol=2**-7, atol=1e-3)  # bf16: a few ulps of summation order
    torch.testing.assert_close(lse, default_lse, rtol=1e-5, atol=1e-4)


# --- FlashAttention-4 as a custom op: its autograd and selective checkpointing, with a math stand-in kernel ---

class _MathKernels:
    """FA4's (forward, backward) contract in float64 closed forms, counting forward calls by key length."""

    def __init__(self):
        self.forward_calls: list[int] = []

    def forward(self, q, k, v):
        self.forward_calls.append(k.shape[1])
        scores = torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(q.shape[-1])
        lse = torch.logsumexp(scores, dim=-1)  # [B, heads, L]
        out = torch.einsum("bhlm,bmhd->blhd", torch.exp(scores - lse[..., None]), v)
        return out, lse  # FA4 returns fp32; float64 here keeps the comparison exact

    def backward(self, q, k, v, out, dout, lse):
        scale = 1 / math.sqrt(q.shape[-1])
        p = torch.exp(torch.einsum("blhd,bmhd->bhlm", q, k) * scale - lse.to(q.dtype)[..., None])
        dv = torch.einsum("bhlm,blhd->bmhd", p, dout)
        dp = torch.einsum("blhd,bmhd->bhlm", dout, v)
        delta = (dout * out).sum(-1).transpose(1, 2)[..., None]  # [B, heads, L, 1]
        ds = p * (dp - delta)
        return (torch.einsum("bhlm,bmhd->blhd", ds, k) * scale, torch.einsum("bhlm,blhd->bmhd", ds, q) * scale,
                dv)


@pytest.fixture
def math_fa4(monkeypatch):
    kernels = _MathKernels()
    monkeypatch.setattr(attn, "_fa4_kernels", lambda: (kernels.forward, kernels.backward))
    return kernels


def test_fa4_custom_op_gradients_equal_the_softmax_formula(math_fa4):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 9, 3, 16, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out = attn.fa4_attention(q, k, v)
    grads = torch.autograd.grad(out.sin().sum(), (q, k, v))
    weights = torch.softmax(torch.einsum("blhd,bmhd->bhlm", q, k) / 4.0, dim=-1)
    expected_out = torch.einsum("bhlm,bmhd->blhd", weights, v)
    expected = torch.autograd.grad(expected_out.sin().sum(), (q, k, v))
    torch.testing.assert_close(out, expected_out, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)  # float64: only rounding differs


def test_fa4_custom_op_has_a_shape_only_implementation_for_compile():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(1, 5, 2, 8, dtype=torch.bfloat16)
        out, lse = attn._fa4_attention_op(q, q, q)
    assert out.shape == (1, 5, 2, 8) and lse.shape == (1, 2, 5) and lse.dtype == torch.float32


def _self_attention_forwards(net, math_fa4, monkeypatch, tokens):
    """Forward kernel calls over `tokens` keys (self-attention) in one training forward+backward of `net`."""
    monkeypatch.setattr(attn, "resolved_attention_backend", lambda q: "fa4")
    g = torch.Generator().manual_seed(0)
    x, t, ctx = torch.randn(1, 16, 2, 8, 8, generator=g), torch.rand(1, 2, generator=g), torch.randn(1, 7, 32)
    math_fa4.forward_calls.clear()
    net(x, t, ctx).square().mean().backward()
    return sum(1 for n in math_fa4.forward_calls if n == tokens)


def test_selective_checkpointing_keeps_fa4_self_attention_within_the_budget(math_fa4, monkeypatch):
    from cosmos_predict2.networks import build_net, dit

    tokens = 2 * 4 * 4  # latent 2 x 8 x 8 after 2x2 patches
    monkeypatch.setattr(dit, "SELECTIVE_MIN_KEYS", tokens)  # the tiny net's self-attention counts as "many keys"
    counts = {}
    for mode, budget in (("full", None), ("selective", None), ("selective", 1.5 * tokens * 64 * 8 / 2**30)):
        net = build_net("tiny", dtype=torch.float64, activation_checkpointing=mode,
                        selective_checkpoint_budget_gib=budget)
        counts[(mode, budget is not None)] = _self_attention_forwards(net, math_fa4, monkeypatch, tokens)
    # 2 blocks: full checkpointing recomputes both self-attentions in the backward, selective none, and a budget
    # of 1.5 block outputs (64 channels x 8 bytes per token) keeps one.
    assert counts == {("full", False): 4, ("selective", False): 2, ("selective", True): 3}, counts
