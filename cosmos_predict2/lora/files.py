"""Adapter files: ours (self-describing) and the reference's (the whole adapted network). PEFT-free.

Our adapter checkpoint (`model/iter_*.pt` of a LoRA run) is a flat dict readable with `torch.load(weights_only=True)`:
    "net.<module>.lora_A.default.weight" / "...lora_B.default.weight"   the trained adapters (fp32)
    "net_ema.<module>.lora_{A,B}.default.weight"                         their EMA (optional)
    "lora_config": {"format": "cosmos-predict2-lora", "version": 1, **LoraSpec fields,
                    "base": {"model_size", "dit_path", "sha256", "net_config"}}
so inference reads rank/alpha/targets from the file instead of having them retyped, and the file holds only the
adapters (2B rank 16: 23 M parameters, ~92 MB in fp32, ~184 MB with the EMA copy) instead of a copy of the base.

The reference's LoRA checkpoint holds the whole adapted network (`net.<module>.base_layer.weight` next to
`...lora_A.default.weight`) and no alpha (docs/reference.md §7, §8).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from cosmos_predict2.io import file_sha256  # noqa: F401  (re-exported: the base checkpoint's identity)
from cosmos_predict2.lora.spec import ADAPTER_FORMAT, VALID_TARGETS, LoraConfigError, LoraSpec

NET, NET_EMA = "net.", "net_ema."


@dataclass
class AdapterFile:
    """What one of our adapter checkpoints holds; weights are keyed as in the adapted network's state dict."""

    spec: LoraSpec
    base: dict = field(default_factory=dict)  # model_size, dit_path, sha256, net_config (+ random_init, seed)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    ema: dict[str, torch.Tensor] | None = None

    def to_state(self) -> dict:
        state: dict = {NET + k: v.detach().cpu() for k, v in self.weights.items()}
        if self.ema is not None:
            state.update({NET_EMA + k: v.detach().cpu() for k, v in self.ema.items()})
        state["lora_config"] = self.config()
        return state

    def config(self) -> dict:
        """The file's `lora_config`: format tag, the spec's fields and the base record."""
        return {"format": ADAPTER_FORMAT, "version": 1, **self.spec.to_dict(), "base": dict(self.base)}

    @classmethod
    def from_state(cls, state: Mapping, source: str) -> AdapterFile:
        if not is_adapter_checkpoint(state):
            raise LoraConfigError(f"{source} is not an adapter checkpoint of this toolkit (no 'lora_config')")
        cfg = state["lora_config"]
        weights = {k[len(NET):]: v for k, v in state.items() if k.startswith(NET)}
        ema = {k[len(NET_EMA):]: v for k, v in state.items() if k.startswith(NET_EMA)}
        return cls(LoraSpec.from_dict(cfg), dict(cfg.get("base", {})), weights, ema or None)

    def inference_weights(self, use_ema: bool = True) -> dict[str, torch.Tensor]:
        """The EMA adapters when present and asked for (what the released models ship), else the trained ones."""
        return self.ema if use_ema and self.ema else self.weights


def read_adapter_file(path: str | os.PathLike) -> AdapterFile:
    """Our adapter checkpoint through the one safe loader; errors name the file."""
    from cosmos_predict2.io import safe_load

    state = safe_load(path, what="LoRA checkpoint")
    if not isinstance(state, Mapping) or not is_adapter_checkpoint(state):
        raise LoraConfigError(
            f"{path} is not an adapter checkpoint of this toolkit (no 'lora_config'); reference LoRA checkpoints "
            "hold the whole network: load them with examples/video2world_lora.py --use_lora --lora_alpha A"
        )
    return AdapterFile.from_state(state, str(path))


def is_adapter_checkpoint(state: Mapping) -> bool:
    cfg = state.get("lora_config") if isinstance(state, Mapping) else None
    return isinstance(cfg, Mapping) and cfg.get("format") == ADAPTER_FORMAT


def has_reference_lora(state: Mapping) -> bool:
    return any(isinstance(k, str) and ".lora_A." in k for k in state)


# Kept for callers that build or split the dict directly.
def adapter_checkpoint(net_lora: Mapping[str, torch.Tensor], spec: LoraSpec, base: Mapping,
                       ema_lora: Mapping[str, torch.Tensor] | None = None) -> dict:
    return AdapterFile(spec, dict(base), dict(net_lora), dict(ema_lora) if ema_lora is not None else None).to_state()


def split_adapter_checkpoint(state: Mapping, use_ema: bool = True) -> tuple[LoraSpec, dict, dict[str, torch.Tensor]]:
    """(spec, base info, adapter weights without prefix) from an adapter checkpoint; EMA weights when present."""
    f = AdapterFile.from_state(state, "adapter checkpoint")
    return f.spec, f.base, f.inference_weights(use_ema)


def split_reference_lora_checkpoint(state: Mapping, prefix: str = NET) -> tuple[dict, dict]:
    """(base weights under plain names, adapter weights) of a reference LoRA checkpoint."""
    base, lora = {}, {}
    for k, v in state.items():
        if not k.startswith(prefix):
            continue
        name = k[len(prefix):]
        if name.startswith(("pos_embedder.", "accum_")):  # reference buffers, not weights
            continue
        if ".lora_" in name:
            lora[name] = v
        else:
            base[name.replace(".base_layer.", ".")] = v
    return base, lora


def infer_spec_from_weights(lora: Mapping[str, torch.Tensor], alpha: float | None) -> LoraSpec:
    """Rank and targets of a reference checkpoint follow from its tensors; alpha does not (it must be given)."""
    if alpha is None:
        raise LoraConfigError(
            "this reference-format LoRA checkpoint does not record lora_alpha: pass --lora_alpha (the value used "
            "in training, e.g. 16 for the 2B guide run)"
        )
    ranks = {v.shape[0] for k, v in lora.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise LoraConfigError(f"reference LoRA checkpoint has adapters of several ranks {sorted(ranks)}")
    targets = sorted({s for k in lora for s in VALID_TARGETS if f".{s}.lora_" in k})
    return LoraSpec(rank=ranks.pop(), alpha=alpha, target_modules=targets)


__all__ = [
    "AdapterFile",
    "adapter_checkpoint",
    "file_sha256",
    "has_reference_lora",
    "infer_spec_from_weights",
    "is_adapter_checkpoint",
    "read_adapter_file",
    "split_adapter_checkpoint",
    "split_reference_lora_checkpoint",
]
