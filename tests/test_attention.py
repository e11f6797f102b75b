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
    assert attn.resolved_attention_backend(fake_cuda) == "fa4"
    assert attn.resolved_attention_backend(fake_cuda, needs_grad=True) == "cudnn"  # training keeps cuDNN
    attn.set_attention_backend("fa4")
    assert attn.resolved_attention_backend(fake_cuda, needs_grad=True) == "fa4"  # unless asked for
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
