"""LoRA through PEFT, and adapter files that describe themselves (SPEC sections 7 and 12).

An adapter checkpoint is a flat dict readable with `torch.load(weights_only=True)`:
    "net.<module>.lora_A.default.weight" / "...lora_B.default.weight"   the trained adapters
    "net_ema.<module>.lora_{A,B}.default.weight"                         their EMA (optional)
    "lora_config": {"format": "cosmos-predict2-lora", "version": 1, "rank", "alpha", "target_modules",
                    "init_lora_weights", "base": {"model_size", "dit_path", "sha256", "net_config"}}
so inference reads rank/alpha/targets from the file instead of having them retyped, and the file holds only
the adapters (about 90 MB for 2B rank 16 in fp32 instead of a 4 GB copy of the base).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

DEFAULT_TARGET_MODULES = "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2"
ADAPTER_FORMAT = "cosmos-predict2-lora"
ADAPTER_NAME = "default"


class LoraConfigError(ValueError):
    """LoRA settings that cannot work: no matching target, nothing trainable, or flags that contradict a file."""


def parse_target_modules(targets: str | list[str] | tuple[str, ...]) -> list[str]:
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    parsed = [t.strip() for t in items if t.strip()]
    if not parsed:
        raise LoraConfigError(f"lora_target_modules is empty; e.g. {DEFAULT_TARGET_MODULES!r}")
    return parsed


@dataclass
class LoraSpec:
    rank: int = 16
    alpha: float = 16
    target_modules: list[str] = field(default_factory=lambda: parse_target_modules(DEFAULT_TARGET_MODULES))
    init_lora_weights: bool | str = True

    def __post_init__(self) -> None:
        self.target_modules = parse_target_modules(self.target_modules)
        if int(self.rank) <= 0:
            raise LoraConfigError(f"lora_rank must be positive, got {self.rank}")
        self.rank = int(self.rank)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> LoraSpec:
        return cls(d["rank"], d["alpha"], list(d["target_modules"]), d.get("init_lora_weights", True))


def matching_modules(net: nn.Module, target_modules: list[str]) -> list[str]:
    """Names of the Linear layers PEFT will adapt: a target matches every module whose name ends with it."""
    out = []
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in target_modules):
            out.append(name)
    return out


def add_lora(net: nn.Module, spec: LoraSpec, adapter_dtype: torch.dtype = torch.float32) -> nn.Module:
    """Inject LoRA adapters with PEFT (in place), freeze everything else, keep adapters in `adapter_dtype`."""
    unmatched = [t for t in spec.target_modules if not matching_modules(net, [t])]
    if unmatched:
        raise LoraConfigError(
            f"LoRA target modules {unmatched} match no Linear layer of the network; valid targets include "
            "q_proj, k_proj, v_proj, output_proj, mlp.layer1, mlp.layer2 (or e.g. self_attn.q_proj)"
        )
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        target_modules=spec.target_modules,
        lora_dropout=0.0,
        bias="none",
        init_lora_weights=spec.init_lora_weights,
    )
    inject_adapter_in_model(config, net, adapter_name=ADAPTER_NAME)
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


def set_lora_scale(net: nn.Module, multiplier: float) -> None:
    """Adapter strength: output = base + multiplier * (alpha / r) * B A x. 0 gives the base model exactly."""
    from peft.tuners.lora import LoraLayer

    for module in net.modules():
        if isinstance(module, LoraLayer):
            module.set_scale(ADAPTER_NAME, multiplier)


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


def file_sha256(path: str | Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def adapter_checkpoint(
    net_lora: Mapping[str, torch.Tensor],
    spec: LoraSpec,
    base: Mapping,
    ema_lora: Mapping[str, torch.Tensor] | None = None,
) -> dict:
    """The dict written as a LoRA run's `model/iter_*.pt` (see module docstring)."""
    ckpt: dict = {"net." + k: v.detach().cpu() for k, v in net_lora.items()}
    if ema_lora is not None:
        ckpt.update({"net_ema." + k: v.detach().cpu() for k, v in ema_lora.items()})
    ckpt["lora_config"] = {"format": ADAPTER_FORMAT, "version": 1, **spec.to_dict(), "base": dict(base)}
    return ckpt


def is_adapter_checkpoint(state: Mapping) -> bool:
    cfg = state.get("lora_config")
    return isinstance(cfg, Mapping) and cfg.get("format") == ADAPTER_FORMAT


def split_adapter_checkpoint(state: Mapping, use_ema: bool = True) -> tuple[LoraSpec, dict, dict[str, torch.Tensor]]:
    """(spec, base info, adapter weights without prefix) from an adapter checkpoint; EMA weights when present."""
    cfg = state["lora_config"]
    prefix = "net_ema." if use_ema and any(k.startswith("net_ema.") for k in state) else "net."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return LoraSpec.from_dict(cfg), dict(cfg.get("base", {})), weights


def check_flags_match(spec: LoraSpec, rank: int | None, alpha: float | None, targets: str | None, source: str) -> None:
    """Optional command-line LoRA flags must equal what the adapter file records (the reference silently applied
    a mismatching alpha)."""
    problems = []
    if rank is not None and int(rank) != spec.rank:
        problems.append(f"--lora_rank {rank} but the adapter was trained with rank {spec.rank}")
    if alpha is not None and float(alpha) != float(spec.alpha):
        problems.append(f"--lora_alpha {alpha} but the adapter was trained with alpha {spec.alpha}")
    if targets is not None and sorted(parse_target_modules(targets)) != sorted(spec.target_modules):
        problems.append(
            f"--lora_target_modules {targets!r} but the adapter targets {','.join(spec.target_modules)!r}"
        )
    if problems:
        raise LoraConfigError(
            f"{source}: " + "; ".join(problems) + ". Drop the --lora_* flags: the adapter file records its own config."
        )


def load_adapter_weights(net: nn.Module, weights: Mapping[str, torch.Tensor], source: str) -> None:
    expected = set(lora_state_dict(net))
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise LoraConfigError(
            f"{source} does not fit the adapted network: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    own = net.state_dict()
    for k, v in weights.items():
        if tuple(v.shape) != tuple(own[k].shape):
            expected = tuple(own[k].shape)
            raise LoraConfigError(f"{source}: {k} has shape {tuple(v.shape)}, the network expects {expected}")
    net.load_state_dict({k: _like(v, own[k]) for k, v in weights.items()}, strict=False)


def _like(value: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """A whole tensor from a file in the layout of the parameter it replaces (FSDP2 shards are DTensors; every
    rank calls this in the same order, as distribute_tensor is collective)."""
    if hasattr(current, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(value.to(current.dtype), current.device_mesh, current.placements)
    return value


def split_reference_lora_checkpoint(state: Mapping, prefix: str = "net.") -> tuple[dict, dict]:
    """A reference LoRA checkpoint holds the whole adapted network (`...q_proj.base_layer.weight`,
    `...q_proj.lora_A.default.weight`). Return (base weights under plain names, adapter weights)."""
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
    suffixes = {"q_proj", "k_proj", "v_proj", "output_proj", "mlp.layer1", "mlp.layer2"}
    targets = sorted({s for k in lora for s in suffixes if f".{s}.lora_" in k})
    return LoraSpec(rank=ranks.pop(), alpha=alpha, target_modules=targets)
