"""LoRA as a capability of the network, through PEFT (docs/reference.md §7): inject, load, scale, merge.

The spec (`lora/spec.py`) says what to inject; the file format (`lora/files.py`) says what is stored.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

import torch
from peft import inject_adapter_in_model
from torch import nn

from cosmos_predict2.lora.spec import ADAPTER_NAME, VALID_TARGETS, LoraConfigError, LoraSpec

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


def add_lora(net: nn.Module, spec: LoraSpec, adapter_dtype: torch.dtype = torch.float32,
             adapter_name: str = ADAPTER_NAME) -> nn.Module:
    """Inject LoRA adapters with PEFT (in place), freeze everything else, keep adapters in `adapter_dtype`.
    Works on the meta device (nothing is allocated), which is how configs are checked before any weight is read.
    Several adapters (each its own name, rank and targets) are injected by calling this once per name; then
    `activate_adapters` makes them all act (PEFT sums the active adapters' outputs).

    Targets that match no Linear layer are reported and skipped, as the reference (PEFT) does with a partial match
    (the guide's creative recipe names `norm1,norm2`, which are not Linear layers); when none matches, the guide's
    "No parameters found for LoRA adaptation" error lists the valid names."""
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


__all__ = ["activate_adapters", "add_lora", "has_lora", "load_adapter_weights", "lora_state_dict",
           "matching_modules", "merge_lora_", "set_lora_scale"]  # fmt: skip
