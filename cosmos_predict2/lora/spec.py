"""The one LoRA spec: rank, alpha, targets, init and dropout, parsed and validated once (docs/reference.md §7).

PEFT-free on purpose (only the standard library is imported), so that composing a config, `--dryrun` and the
inference flag checks never import PEFT or the network. Every other representation is derived from `LoraSpec`:

    model config    `model.config.lora_rank` ... (`LoraSpec.from_model_config`, `CONFIG_KEYS`)
    adapter files   `lora_config` in `model/iter_*.pt` (`to_dict` / `from_dict`)
    PEFT            `peft.LoraConfig` for injection and export (`to_peft`)
    inference flags `--lora_rank` ... must equal the file (`check_matches`)

A new knob is one field here (with its config key) and one field in the model config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_TARGET_MODULES = "q_proj,k_proj,v_proj,output_proj,mlp.layer1,mlp.layer2"
# The Linear-layer name suffixes of the DiT a target can name (reference module names).
VALID_TARGETS = ("q_proj", "k_proj", "v_proj", "output_proj", "mlp.layer1", "mlp.layer2")
ADAPTER_FORMAT = "cosmos-predict2-lora"
ADAPTER_NAME = "default"  # PEFT's adapter name: `...q_proj.lora_A.default.weight`
# How the adapters compute (not part of an adapter: the same file either way): "base" in each layer's dtype, added
# into its output in one fused step (bf16 on the GPU, as the reference); "float32": PEFT's forward, in fp32.
LORA_COMPUTE_DTYPES = ("base", "float32")


class LoraConfigError(ValueError):
    """LoRA settings that cannot work: no matching target, nothing trainable, or flags that contradict a file."""


def parse_target_modules(targets: str | list[str] | tuple[str, ...]) -> list[str]:
    """'q_proj, k_proj' or ['q_proj', 'k_proj'] -> ['q_proj', 'k_proj']; empty is an error."""
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    parsed = [str(t).strip() for t in items if str(t).strip()]
    if not parsed:
        raise LoraConfigError(f"lora_target_modules is empty; e.g. {DEFAULT_TARGET_MODULES!r}")
    return parsed


def _key(config_key: str) -> dict:
    return {"config_key": config_key}


@dataclass
class LoraSpec:
    rank: int = field(default=16, metadata=_key("lora_rank"))
    alpha: float = field(default=16, metadata=_key("lora_alpha"))
    target_modules: list[str] = field(default_factory=lambda: parse_target_modules(DEFAULT_TARGET_MODULES),
                                      metadata=_key("lora_target_modules"))
    init_lora_weights: bool | str = field(default=True, metadata=_key("init_lora_weights"))
    dropout: float = field(default=0.0, metadata=_key("lora_dropout"))  # PEFT's lora_dropout (training only)

    def __post_init__(self) -> None:
        self.target_modules = parse_target_modules(self.target_modules)
        if isinstance(self.rank, bool) or int(self.rank) != self.rank or int(self.rank) <= 0:
            raise LoraConfigError(f"lora_rank must be a positive integer, got {self.rank!r}")
        self.rank = int(self.rank)
        if float(self.alpha) == 0:
            raise LoraConfigError("lora_alpha must not be 0: the adapter's output is scaled by alpha/rank, so it "
                                  "could never change the model (the guide uses alpha = rank)")  # fmt: skip
        if not 0 <= float(self.dropout) < 1:
            raise LoraConfigError(f"lora_dropout must lie in [0, 1), got {self.dropout!r}")
        self.dropout = float(self.dropout)

    @property
    def scale(self) -> float:
        """PEFT's scaling: output = base(x) + (alpha / rank) * B(A(x))."""
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> LoraSpec:
        """From an adapter file's `lora_config` (files written before a knob existed get its default)."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    @classmethod
    def from_model_config(cls, config: Any) -> LoraSpec:
        """From `model.config` (a dataclass, dict or DictConfig) through each field's config key."""
        get = config.get if isinstance(config, Mapping) else lambda key, default: getattr(config, key, default)
        values = {f.name: get(key, None) for f, key in CONFIG_KEYS.items()}
        return cls(**{name: value for name, value in values.items() if value is not None})

    def to_peft(self, target_modules: list[str] | None = None):
        """The `peft.LoraConfig` used for injection and export (targets may be renamed for another layout)."""
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=target_modules or self.target_modules,
                          lora_dropout=self.dropout, bias="none", init_lora_weights=self.init_lora_weights)

    def check_matches(self, source: str, **flags: Any) -> None:
        """Optional command-line values (None = not given) must equal what the adapter file records: the
        reference silently applied a mismatching alpha. Keys are config keys (`lora_rank=...`)."""
        problems = []
        for f, key in CONFIG_KEYS.items():
            given = flags.get(key)
            if given is None:
                continue
            ours, theirs = getattr(self, f.name), getattr(LoraSpec(**{**self.to_dict(), f.name: given}), f.name)
            if sorted(ours) != sorted(theirs) if isinstance(ours, list) else ours != theirs:
                problems.append(f"--{key} {given} but the adapter was trained with {f.name} {_show(ours)}")
        if problems:
            raise LoraConfigError(f"{source}: " + "; ".join(problems)
                                  + ". Drop the --lora_* flags: the adapter file records its own config.")

    def describe(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, targets={self.target_modules}"


def _show(value: Any) -> str:
    return repr(",".join(value)) if isinstance(value, list) else str(value)


CONFIG_KEYS = {f: f.metadata["config_key"] for f in fields(LoraSpec)}


__all__ = [
    "ADAPTER_FORMAT",
    "ADAPTER_NAME",
    "CONFIG_KEYS",
    "DEFAULT_TARGET_MODULES",
    "VALID_TARGETS",
    "LoraConfigError",
    "LoraSpec",
    "parse_target_modules",
]
