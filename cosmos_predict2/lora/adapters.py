"""LoRA as a capability of the network, through PEFT (docs/reference.md §7): inject, load, scale, merge.

The spec (`lora/spec.py`) says what to inject; the file format (`lora/files.py`) says what is stored.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from peft import inject_adapter_in_model
from peft.tuners.lora.layer import Linear as PeftLoraLinear
from torch import nn

from cosmos_predict2.lora.spec import ADAPTER_NAME, LORA_COMPUTE_DTYPES, VALID_TARGETS, LoraConfigError, LoraSpec

log = logging.getLogger(__name__)


def matching_modules(net: nn.Module, target_modules: list[str]) -> list[str]:
    """Names of the Linear layers PEFT will adapt: a target matches every module whose name ends with it (a layer
    that already holds an adapter counts by its base layer, so a second adapter can be injected)."""
    out = []
    for name, module in net.named_modules():
        linear = isinstance(module, nn.Linear) or isinstance(getattr(module, "base_layer", None), nn.Linear)
        if linear and any(name == t or name.endswith("." + t) for t in target_modules):
            out.append(name)
    return out


class _DownProjection(torch.autograd.Function):
    """x @ A.T with x cast to A's dtype inside the function, so that autograd keeps x in its own dtype for the
    backward. PEFT casts first (`x.to(float32)`), and the fp32 copy is what its lora_A matmul keeps: with a bf16
    base that is twice the bytes of x for every adapted layer (16 GiB per 14B 720p block, in the backward's
    recompute), for numbers a bf16 -> fp32 cast reproduces exactly."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.linear(x.to(weight.dtype), weight)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = (grad_out @ weight).to(x.dtype) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = grad_out.reshape(-1, grad_out.shape[-1]).T @ x.reshape(-1, x.shape[-1]).to(weight.dtype)
        return grad_x, grad_w


class LoraDown(nn.Linear):
    """PEFT's lora_A (bias-free Linear, same parameter and key) taking its input in the base dtype; see
    `_DownProjection`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype:
            return F.linear(x, self.weight)
        return _DownProjection.apply(x, self.weight)


class _LoraDelta(torch.autograd.Function):
    """y += (x A^T)(scale B)^T in place, in x's dtype: two small matmuls, the second accumulating into the base
    layer's output in its epilogue (cuBLAS beta = 1), each with fp32 accumulation. The adapters' fp32 weights are
    cast for the call (the reference trains LoRA in bf16 with fp32 master weights: the same numbers, rounded once
    per product instead of after each of PEFT's steps). PEFT's forward computes the same sum in fp32 through
    [tokens, out] fp32 temporaries (the cast input, B's output, its scaled copy, the fp32 sum and its cast back):
    at 2B 720p those passes cost ~2.6 s of a 12.9 s training step (BENCHMARKS.md)."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, x: torch.Tensor, weight_A: torch.Tensor, weight_B: torch.Tensor,
                scale: float) -> torch.Tensor:
        x_N_in = x.reshape(-1, x.shape[-1])
        h_N_r = x_N_in @ weight_A.to(x.dtype).T
        y.view(-1, y.shape[-1]).addmm_(h_N_r, (weight_B * scale).to(x.dtype).T)
        ctx.mark_dirty(y)
        ctx.save_for_backward(x, h_N_r, weight_A, weight_B)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, h_N_r, weight_A, weight_B = ctx.saved_tensors
        g_N_out = grad_y.reshape(-1, grad_y.shape[-1])
        gh_N_r = g_N_out @ (weight_B * ctx.scale).to(x.dtype)  # d loss / d (x A^T)
        grad_x = (gh_N_r @ weight_A.to(x.dtype)).view_as(x) if ctx.needs_input_grad[1] else None
        grad_A = (gh_N_r.T @ x.reshape(-1, x.shape[-1])).to(weight_A.dtype) if ctx.needs_input_grad[2] else None
        grad_B = (g_N_out.T @ h_N_r).to(weight_B.dtype) * ctx.scale if ctx.needs_input_grad[3] else None
        return grad_y, grad_x, grad_A, grad_B, None


def _gelu_backward_(grad_N_in: torch.Tensor, x_N_in: torch.Tensor, chunk_bytes: int = 2**26) -> torch.Tensor:
    """grad *= GELU'(x), in place, a block of rows at a time: the temporaries are one block's, not [tokens, in]."""
    rows = max(1, chunk_bytes // (grad_N_in.shape[-1] * grad_N_in.element_size()))
    for start in range(0, grad_N_in.shape[0], rows):
        g = grad_N_in[start:start + rows]
        g.copy_(torch.ops.aten.gelu_backward(g, x_N_in[start:start + rows]))
    return grad_N_in


class _LinearWithLora(torch.autograd.Function):
    """y = a W^T (+ bias) + (a A^T)(scale B)^T with a = x, or a = GELU(x) (`gelu_input`: the MLP's second
    projection, which then keeps x, the GELU's input that its backward needs anyway, instead of a as well): the
    base layer and its first adapter in one function, so that the backward forms the input gradient in one
    buffer: g W, then += (g scale B) A in the second product's epilogue, then (GELU) *= GELU'(x) in place.
    Base and adapter as two autograd nodes (`_LoraDelta` after the base Linear) give the engine two [tokens, in]
    gradients to sum into a third; with the GELU's output kept and its backward's own output, the 2B 720p step's
    peak held five [tokens, 4 D] tensors in the MLP's backward, now two (BENCHMARKS.md). Same products, one
    rounding fewer (the adapter's share is added before rounding); GELU recomputed exactly."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, weight_A: torch.Tensor,
                weight_B: torch.Tensor, scale: float, gelu_input: bool = False) -> torch.Tensor:
        a = F.gelu(x) if gelu_input else x
        a_N_in = a.reshape(-1, a.shape[-1])
        # y is allocated in its final shape and filled through a 2-D view: an output that is itself a view (as
        # F.linear's of a 3-D input is) could not be modified in place by a second adapter's `_LoraDelta`.
        y = a.new_empty(*a.shape[:-1], weight.shape[0])
        y_N_out = y.view(-1, weight.shape[0])
        torch.mm(a_N_in, weight.T, out=y_N_out) if bias is None else torch.addmm(bias, a_N_in, weight.T, out=y_N_out)
        h_N_r = a_N_in @ weight_A.to(a.dtype).T
        y_N_out.addmm_(h_N_r, (weight_B * scale).to(a.dtype).T)
        # weight.detach(): the storage this call used. fp8 storage (networks/fp8.py) puts the fp8 tensor back into
        # the frozen Parameter after the call, and checkpointing keeps a tensor that needs no gradient as it is.
        ctx.save_for_backward(x, weight.detach(), h_N_r, weight_A, weight_B)
        ctx.scale, ctx.has_bias, ctx.gelu_input = scale, bias is not None, gelu_input
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, weight, h_N_r, weight_A, weight_B = ctx.saved_tensors
        need_x, need_w, need_bias, need_A, need_B = ctx.needs_input_grad[:5]
        g_N_out = grad_y.reshape(-1, grad_y.shape[-1])
        x_N_in = x.reshape(-1, x.shape[-1])
        gh_N_r = g_N_out @ (weight_B * ctx.scale).to(x.dtype)  # d loss / d (a A^T)
        grad_w = grad_A = None
        if need_w or need_A:  # the products with a first: a recomputed GELU is freed before the input gradient
            a_N_in = F.gelu(x_N_in) if ctx.gelu_input else x_N_in
            grad_w = (g_N_out.T @ a_N_in).to(weight.dtype) if need_w else None
            grad_A = (gh_N_r.T @ a_N_in).to(weight_A.dtype) if need_A else None
            del a_N_in
        grad_bias = g_N_out.sum(0) if need_bias and ctx.has_bias else None
        grad_B = (g_N_out.T @ h_N_r).to(weight_B.dtype) * ctx.scale if need_B else None
        grad_x = None
        if need_x:
            grad_x = g_N_out @ weight.to(g_N_out.dtype)
            grad_x.addmm_(gh_N_r, weight_A.to(g_N_out.dtype))
            grad_x = (_gelu_backward_(grad_x, x_N_in) if ctx.gelu_input else grad_x).view_as(x)
        return grad_x, grad_w, grad_bias, grad_A, grad_B, None, None


class FusedLoraLinear(PeftLoraLinear):
    """PEFT's LoRA Linear (same parameters, keys, merge and scale) whose plain adapters add into the base output in
    the layer's dtype (`_LinearWithLora`, `_LoraDelta`). Everything else (dropout, DoRA and other variants, a bias
    on lora_B, mixed-adapter batches, autocast) takes PEFT's own forward.

    `layer(x, gelu_input=True)` is `layer(GELU(x))` (exact GELU) keeping x rather than GELU(x) for the backward
    where the layer is fused; networks/dit.py's MLP calls its second projection so when `takes_gelu_input`."""

    takes_gelu_input = True

    def forward(self, x: torch.Tensor, *args, gelu_input: bool = False, **kwargs) -> torch.Tensor:
        active = [n for n in self.active_adapters if n in self.lora_A]
        fusable = self._fusable(x, active, args, kwargs)
        if gelu_input and not (fusable and len(active) == 1 and self._plain_base(x)):
            x, gelu_input = F.gelu(x), False
        if not fusable:
            return super().forward(x, *args, **kwargs)
        if not active:
            return self.base_layer(x)
        first, *rest = active
        base = self.base_layer
        if self._plain_base(x):
            result = _LinearWithLora.apply(x, base.weight, base.bias, self.lora_A[first].weight,
                                           self.lora_B[first].weight, self.scaling[first], gelu_input)  # fmt: skip
        else:  # the base layer's own call (a hooked or fp8 weight), then the adapter
            rest = active
            result = base(x).contiguous()
        for name in rest:
            result = _LoraDelta.apply(result, x, self.lora_A[name].weight, self.lora_B[name].weight,
                                      self.scaling[name])  # fmt: skip
        return result

    def _plain_base(self, x: torch.Tensor) -> bool:
        """A hook-free nn.Linear with a plain tensor weight in x's dtype: one `_LinearWithLora` call can own it."""
        base = self.base_layer
        return (type(base) is nn.Linear and not base._forward_hooks and not base._forward_pre_hooks
                and type(base.weight.data) is torch.Tensor and base.weight.dtype == x.dtype)  # fmt: skip

    def _fusable(self, x: torch.Tensor, active: list[str], args: tuple, kwargs: dict) -> bool:
        plain = all(isinstance(self.lora_dropout[n], nn.Identity) and n not in getattr(self, "lora_variant", {})
                    and self.lora_B[n].bias is None for n in active)  # fmt: skip
        return (plain and not args and not kwargs and not self.disable_adapters and not self.merged
                and x.is_floating_point() and not torch.is_autocast_enabled(x.device.type))  # fmt: skip


def _fuse_adapters(net: nn.Module) -> None:
    """Give every PEFT LoRA Linear the fused forward (a subclass of PEFT's: isinstance checks, state dict keys,
    merge and scale stay PEFT's)."""
    for module in net.modules():
        if type(module) is PeftLoraLinear:
            module.__class__ = FusedLoraLinear


def _keep_input_dtype(net: nn.Module, adapter_name: str) -> None:
    """Make each adapted layer's new lora_A a LoraDown and stop PEFT's input cast (LoraDown casts inside). Only for
    layers without dropout: dropout runs on the input before lora_A, and in bf16 it would round differently."""
    for module in net.modules():
        lora_A = getattr(module, "lora_A", None)
        if not isinstance(lora_A, nn.ModuleDict) or adapter_name not in lora_A:
            continue
        if not all(isinstance(d, nn.Identity) for d in module.lora_dropout.values()):
            continue
        old = lora_A[adapter_name]
        if type(old) is nn.Linear and old.bias is None:
            new = LoraDown(old.in_features, old.out_features, bias=False, device="meta")
            new.weight = old.weight  # the same Parameter: nothing copied, nothing re-initialised
            lora_A[adapter_name] = new
        if all(isinstance(a, LoraDown) for a in lora_A.values()):
            module.cast_input_dtype_enabled = False  # PEFT's switch (peft.helpers.disable_input_dtype_casting)


def add_lora(net: nn.Module, spec: LoraSpec, adapter_dtype: torch.dtype = torch.float32,
             adapter_name: str = ADAPTER_NAME, keep_input_dtype: bool = True,
             compute_dtype: str = "float32") -> nn.Module:
    """Inject LoRA adapters with PEFT (in place), freeze everything else, keep adapters in `adapter_dtype`.
    Works on the meta device (nothing is allocated), which is how configs are checked before any weight is read.
    Several adapters (each its own name, rank and targets) are injected by calling this once per name; then
    `activate_adapters` makes them all act (PEFT sums the active adapters' outputs).

    Targets that match no Linear layer are reported and skipped, as the reference (PEFT) does with a partial match
    (the guide's creative recipe names `norm1,norm2`, which are not Linear layers); when none matches, the guide's
    "No parameters found for LoRA adaptation" error lists the valid names.

    `keep_input_dtype`: the adapters' down projections keep their input in the base dtype for the backward instead
    of PEFT's fp32 copy (`LoraDown`; same numbers, half the activation bytes of each adapted layer).

    `compute_dtype`: "base" adds the adapters into each layer's output in the layer's dtype (bf16 on the GPU: the
    reference's numbers, `FusedLoraLinear`); "float32" runs PEFT's forward, the adapter math in fp32."""
    if compute_dtype not in LORA_COMPUTE_DTYPES:
        raise LoraConfigError(f"LoRA compute dtype {compute_dtype!r}: choose one of {LORA_COMPUTE_DTYPES}")
    unmatched = [t for t in spec.target_modules if not matching_modules(net, [t])]
    valid = f"valid targets: {', '.join(VALID_TARGETS)} (or a longer suffix such as self_attn.q_proj)"
    if len(unmatched) == len(spec.target_modules):
        raise LoraConfigError(f"No parameters found for LoRA adaptation: LoRA target modules {unmatched} match no "
                              f"Linear layer of the network; {valid}")  # fmt: skip
    if unmatched:
        log.warning(f"LoRA target modules {unmatched} match no Linear layer of the network and are ignored; {valid}. "
                    f"Training adapters on {[t for t in spec.target_modules if t not in unmatched]}")  # fmt: skip
    matched = [t for t in spec.target_modules if t not in unmatched]
    with warnings.catch_warnings():  # a second adapter is intended here: PEFT warns of "multiple adapters"
        warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
        inject_adapter_in_model(spec.to_peft(matched), net, adapter_name=adapter_name)
    for name, p in net.named_parameters():
        is_lora = ".lora_" in name
        p.requires_grad_(is_lora)
        if is_lora and p.dtype != adapter_dtype and not p.is_meta:
            p.data = p.data.to(adapter_dtype)
    if not any(p.requires_grad for p in net.parameters()):
        raise LoraConfigError("No parameters found for LoRA adaptation: nothing is trainable")
    if keep_input_dtype:
        _keep_input_dtype(net, adapter_name)
    if compute_dtype == "base":
        _fuse_adapters(net)
    return net


def lora_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in net.state_dict().items() if ".lora_" in k}


def has_lora(net: nn.Module) -> bool:
    return any(".lora_" in name for name, _ in net.named_parameters())


def set_lora_scale(net: nn.Module, multiplier: float, adapter_name: str = ADAPTER_NAME) -> None:
    """Adapter strength: output = base + multiplier * (alpha / r) * B A x. 0 gives the base model exactly."""
    from peft.tuners.lora import LoraLayer

    for module in net.modules():
        if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
            module.set_scale(adapter_name, multiplier)


def activate_adapters(net: nn.Module, adapter_names: list[str]) -> None:
    """Make all named adapters act at once (each layer adds those it has); PEFT keeps only the first one injected
    active otherwise. For inference: the whole network is frozen afterwards (PEFT unfreezes active adapters)."""
    from peft.tuners.lora import LoraLayer

    for module in net.modules():
        if isinstance(module, LoraLayer):
            module.set_adapter([n for n in adapter_names if n in module.lora_A])
    net.requires_grad_(False)


def merge_lora_(net: nn.Module) -> nn.Module:
    """Fold the adapters (at their current scale) into the base weights and drop the LoRA wrappers, so inference
    runs exactly as fast as the base model. The merged weight is rounded once to the base dtype."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(net.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent_name) if parent_name else net, child, module.get_base_layer())
    return net


def load_adapter_weights(net: nn.Module, weights: Mapping[str, torch.Tensor], source: str,
                         adapter_name: str = ADAPTER_NAME) -> None:
    """Whole adapter tensors (keyed `<module>.lora_A.default.weight`, as in our files) into the adapter
    `adapter_name` of an adapted network (plain or FSDP2-sharded); keys and shapes checked first."""
    from cosmos_predict2.io import check_keys
    from cosmos_predict2.parallel.dtensor import like

    if adapter_name != ADAPTER_NAME:
        weights = {k.replace(f".{ADAPTER_NAME}.weight", f".{adapter_name}.weight"): v for k, v in weights.items()}
    own = {k: v for k, v in lora_state_dict(net).items() if k.endswith(f".{adapter_name}.weight")}
    check_keys(own, weights, source, what="the adapted network", error=LoraConfigError)
    net.load_state_dict({k: like(v, own[k]) for k, v in weights.items()}, strict=False)


__all__ = ["FusedLoraLinear", "activate_adapters", "add_lora", "has_lora",
           "load_adapter_weights", "lora_state_dict", "matching_modules", "merge_lora_", "set_lora_scale"]
