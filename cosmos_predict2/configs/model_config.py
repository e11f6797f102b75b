"""`model.config`: the fields of the training model, their defaults and their checks. Light on purpose.

The config files import this (not `training/`, `networks/` or PEFT), so composing a config and `--dryrun`'s first
checks cost no heavy import. The LoRA fields are validated by the one LoRA spec (`cosmos_predict2.lora.spec`,
standard library only), whose defaults these fields take.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cosmos_predict2.diffusion.rectified_flow import SIGMA_CONDITIONAL
from cosmos_predict2.lora.spec import DEFAULT_TARGET_MODULES, LORA_COMPUTE_DTYPES, LoraConfigError, LoraSpec

TRAIN_ARCHITECTURES = ("lora", "full", "base")
PRECISIONS = ("bf16", "fp16", "fp32")
TOKENIZER_TYPES = ("wan2.1", "tiny_random")
RANDOM_INITS = ("random", "scratch")
ACTIVATION_CHECKPOINTING = ("none", "full", "selective", "nested")  # nested: blocks and their sub-layers
# docs/memory.md: where the checkpointed activations and the frozen base weights live during a step.
# memory mode -> (activations offloaded to host memory, frozen block weights streamed from host memory)
MEMORY_MODES = {
    "default": (False, False),
    "offload_activations": (True, False),
    "stream_weights": (False, True),
    "low": (True, True),
}
BASE_WEIGHT_STORAGE = ("bf16", "fp8_e5m2", "fp8_e4m3")  # "bf16": the base in model.config.precision as loaded
AUTO_MEMORY_MODE = "auto"  # the memory planner (training/memory_plan.py) picks the fastest mode that fits

DEFAULT_DIT_PATHS = {
    "2B": "checkpoints/nvidia/Cosmos-Predict2-2B-Video2World/model-720p-16fps.pt",
    "14B": "checkpoints/nvidia/Cosmos-Predict2-14B-Video2World/model-720p-16fps.pt",
}
_LORA_DEFAULTS = LoraSpec()


@dataclass
class EMAConfig:
    enabled: bool = True
    rate: float = 0.1  # power-EMA s (docs/reference.md §6)


@dataclass
class PipeConfig:
    """The guide's `pipe_config` block. Only `ema` matters for training; the prompt refiner and guardrail are
    inference-time components, accepted here so the guide's experiment dicts load unchanged."""

    ema: EMAConfig = field(default_factory=EMAConfig)
    prompt_refiner_config: dict = field(default_factory=lambda: {"enabled": False})
    guardrail_config: dict = field(default_factory=lambda: {"enabled": False})


@dataclass
class Video2WorldModelConfig:
    """`model.config` of the training config. Names follow the reference where it has one."""

    model_size: str = "2B"  # a named size of cosmos_predict2.networks ("2B", "14B", "tiny")
    net: dict = field(default_factory=dict)  # constructor overrides, e.g. {"crossattn_emb_channels": 64}
    dit_path: str = DEFAULT_DIT_PATHS["2B"]  # base weights (.pt or diffusers); "" = random init (see random_init)
    random_init: str = "random"  # for dit_path "": "random" (all weights random) or "scratch" (identity blocks)
    tokenizer_type: str = "wan2.1"  # "wan2.1" (tokenizer_path) or "tiny_random" (small random VAE, tests/demo)
    tokenizer_path: str = "checkpoints/nvidia/Cosmos-Predict2-2B-Video2World/tokenizer/tokenizer.pth"
    text_encoder_path: str = ""  # never loaded for training: the dataset carries T5 embeddings (§12)
    train_architecture: str = "full"  # "lora", or "full"/"base" = full fine-tuning
    # LoRA (lora/spec.py holds the defaults and the checks)
    lora_rank: int = _LORA_DEFAULTS.rank
    lora_alpha: float = _LORA_DEFAULTS.alpha
    lora_target_modules: str = DEFAULT_TARGET_MODULES
    init_lora_weights: bool = _LORA_DEFAULTS.init_lora_weights
    lora_dropout: float = _LORA_DEFAULTS.dropout
    lora_compute_dtype: str = "base"  # "base": the base dtype, fused (FusedLoraLinear); "float32": PEFT's fp32 path
    pipe_config: PipeConfig = field(default_factory=PipeConfig)
    # §2: training noise levels
    p_mean: float = 0.0
    p_std: float = 1.0
    video_noise_multiplier: bool = True  # sigma *= sqrt(T_latent)
    high_sigma_ratio: float = 0.05
    high_sigma_min: float = 200.0
    high_sigma_max: float = 1e5
    # §2: conditioning latent frames
    min_num_conditional_frames: int = 1
    max_num_conditional_frames: int = 2
    sigma_conditional: float = SIGMA_CONDITIONAL
    text_dropout_rate: float = 0.2  # probability of zeroing a sample's whole text embedding
    loss_scale: float = 10.0
    precision: str = "bf16"  # dtype of the frozen base (LoRA) / of the autocast compute (full)
    activation_checkpointing: str = "selective"  # "none", "full", "selective", "nested" (docs/memory.md)
    memory_mode: str = "default"  # "default", "offload_activations", "stream_weights", "low" (both), "auto"
    base_weight_storage: str = "bf16"  # LoRA: "fp8_e5m2"/"fp8_e4m3" keep frozen block Linear weights in fp8 (lossy)
    # selective: keep the self-attention outputs of only as many blocks as fit this many GiB (None: every block)
    selective_checkpoint_budget_gib: float | None = None
    natten: bool = False  # the sparse-attention (NATTEN) variant: base = model-720p-*-natten.pt (docs/reference.md §13)
    fsdp_shard_size: int = 1  # ranks per FSDP shard group (reference: 8 for 2B, 32 for 14B)
    hash_base_checkpoint: bool = True  # record/verify sha256 of dit_path in LoRA checkpoints

    @property
    def is_lora(self) -> bool:
        return self.train_architecture == "lora"

    @property
    def offloads_activations(self) -> bool:
        return MEMORY_MODES.get(self.memory_mode, (False, False))[0]

    @property
    def streams_weights(self) -> bool:
        return MEMORY_MODES.get(self.memory_mode, (False, False))[1]

    def lora_spec(self) -> LoraSpec:
        return LoraSpec.from_model_config(self)


class ModelConfigError(ValueError):
    """A `model.config.*` value of the wrong type or out of range; the message names the key."""


def type_problem(value: Any, default: Any) -> str | None:
    """None when `value` has the type of `default` (ints where an int is expected, numbers where a float is, a
    list where a list is, ...), else what is expected, for a message ("an integer", "a list of integers")."""
    if default is None or value is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if isinstance(default, float):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    if isinstance(default, (list, tuple)):
        kinds = {type(d) for d in default}
        of = f" of {_plural(type_problem(object(), default[0]))}" if len(kinds) == 1 else ""
        if not isinstance(value, (list, tuple)):
            return f"a list{of}"
        if of and any(type_problem(v, default[0]) is not None for v in value):
            return f"a list{of}"
        return None
    if isinstance(default, Mapping):
        return None if isinstance(value, Mapping) else "a mapping {key: value}"
    return None


def _plural(kind: str | None) -> str:
    return {"an integer": "integers", "a number": "numbers", "a string": "strings",
            "true or false": "booleans"}.get(kind or "", "values")  # fmt: skip


def model_config_dict(**overrides: Any) -> dict:
    """The default model config as a plain dict (for the Hydra tree), with overrides merged in."""
    base = asdict(Video2WorldModelConfig())
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise KeyError(f"unknown model config fields {unknown}")
    base.update(overrides)
    return base


def _to_container(config: Any) -> dict:
    from cosmos_predict2.configs.lazy import _to_container as to_container

    return dict(to_container(config))


def parse_model_config(config: Any) -> Video2WorldModelConfig:
    """Dict (or DictConfig) -> validated dataclass; errors name the `model.config.*` key."""
    d = _to_container(config)
    unknown = sorted(set(d) - set(Video2WorldModelConfig.__dataclass_fields__))
    if unknown:
        raise ModelConfigError(f"unknown model.config fields {unknown}")
    _check_types(d)
    pipe = dict(d.get("pipe_config") or {})
    pipe_cfg = PipeConfig(ema=EMAConfig(**dict(pipe.get("ema") or {})), **{k: v for k, v in pipe.items() if k != "ema"})
    cfg = Video2WorldModelConfig(**{**d, "pipe_config": pipe_cfg})
    _check(cfg)
    return cfg


_DEFAULTS = asdict(Video2WorldModelConfig())


_CHECKED_BY_SPEC = {"lora_target_modules"}  # a string or a list of names: the LoRA spec parses and checks it


def _check_types(d: dict, defaults: dict = _DEFAULTS, prefix: str = "model.config.") -> None:
    for key, value in d.items():
        default = defaults.get(key)
        if key in _CHECKED_BY_SPEC:
            continue
        if isinstance(default, dict) and isinstance(value, Mapping) and key != "net":
            _check_types(dict(value), default, f"{prefix}{key}.")
            continue
        kind = type_problem(value, default)
        if kind is not None:
            raise ModelConfigError(f"{prefix}{key}={value!r}: expected {kind} (default {default!r})")


def _check(cfg: Video2WorldModelConfig) -> None:
    def check(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ModelConfigError(f"model.config.{key}={getattr(cfg, key)!r}: {msg}")

    check(cfg.train_architecture in TRAIN_ARCHITECTURES, "train_architecture", f"choose one of {TRAIN_ARCHITECTURES}")
    check(cfg.precision in PRECISIONS, "precision", f"choose one of {sorted(PRECISIONS)}")
    check(cfg.tokenizer_type in TOKENIZER_TYPES, "tokenizer_type", f"choose one of {TOKENIZER_TYPES}")
    check(cfg.random_init in RANDOM_INITS, "random_init", f"choose one of {RANDOM_INITS}")
    check(cfg.activation_checkpointing in ACTIVATION_CHECKPOINTING, "activation_checkpointing",
          f"choose one of {ACTIVATION_CHECKPOINTING}")  # fmt: skip
    budget = cfg.selective_checkpoint_budget_gib
    check(budget is None or (isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget >= 0),
          "selective_checkpoint_budget_gib", "must be a non-negative number of GiB (or null: keep every block's)")
    check(not cfg.natten or cfg.model_size in ("2B", "14B"), "natten",
          "the NATTEN variants exist for model_size 2B and 14B only")
    check(cfg.memory_mode in (*MEMORY_MODES, AUTO_MEMORY_MODE), "memory_mode",
          f"choose one of {(*MEMORY_MODES, AUTO_MEMORY_MODE)}")  # fmt: skip
    check(cfg.memory_mode in ("default", AUTO_MEMORY_MODE) or cfg.activation_checkpointing != "none", "memory_mode",
          "offloading and weight streaming work on checkpointed blocks: set model.config.activation_checkpointing "
          "to 'full' or 'selective'")  # fmt: skip
    check(cfg.lora_compute_dtype in LORA_COMPUTE_DTYPES, "lora_compute_dtype", f"choose one of {LORA_COMPUTE_DTYPES}")
    check(cfg.base_weight_storage in BASE_WEIGHT_STORAGE, "base_weight_storage", f"choose one of {BASE_WEIGHT_STORAGE}")
    check(cfg.base_weight_storage == "bf16" or (cfg.is_lora and cfg.activation_checkpointing != "none"),
          "base_weight_storage", "fp8 storage of the frozen weights needs model.config.train_architecture=lora and "
          "activation_checkpointing 'full', 'selective' or 'nested'")  # fmt: skip
    check(cfg.memory_mode in ("default", AUTO_MEMORY_MODE) or cfg.is_lora or cfg.memory_mode == "offload_activations",
          "memory_mode", "weight streaming keeps frozen base weights in host memory: it needs "
          "model.config.train_architecture=lora")  # fmt: skip
    check(0 <= cfg.text_dropout_rate <= 1, "text_dropout_rate", "must lie in [0, 1]")
    check(0 <= cfg.high_sigma_ratio <= 1, "high_sigma_ratio", "must lie in [0, 1]")
    check(1 <= cfg.min_num_conditional_frames <= cfg.max_num_conditional_frames, "min_num_conditional_frames",
          f"need 1 <= min <= max_num_conditional_frames ({cfg.max_num_conditional_frames})")  # fmt: skip
    check(cfg.sigma_conditional > 0, "sigma_conditional", "must be positive (reference: 1e-4)")
    try:  # the LoRA fields are checked by the one spec, whatever the architecture (the values are recorded)
        cfg.lora_spec()
    except LoraConfigError as e:
        raise LoraConfigError(f"model.config.{e}") from e


__all__ = [
    "AUTO_MEMORY_MODE",
    "DEFAULT_DIT_PATHS",
    "EMAConfig",
    "MEMORY_MODES",
    "ModelConfigError",
    "PipeConfig",
    "Video2WorldModelConfig",
    "model_config_dict",
    "parse_model_config",
    "type_problem",
]
