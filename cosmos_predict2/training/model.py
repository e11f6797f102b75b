"""The Video2World training model: the DiT (optionally with LoRA), the VAE for on-the-fly latents, the EMA, and
the training step of SPEC section 2.

Precision policy:
  - LoRA: the frozen base in `precision` (bf16 on GPU), adapters fp32, no autocast (PEFT casts the adapter
    input to the adapter dtype and adds the result back in the base dtype).
  - full fine-tuning: the network is kept in fp32 (these are the optimizer's master weights) and the forward
    runs under `precision` autocast, so matmuls and attention run in bf16 as in the reference.
  - the loss, sigma, noise and preconditioning are fp32 (cosmos_predict2.diffusion.rectified_flow).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cosmos_predict2.diffusion.rectified_flow import (
    SIGMA_CONDITIONAL,
    SigmaSampler,
    Video2WorldCondition,
    conditioning_mask,
    video2world_loss,
)
from cosmos_predict2.lora import DEFAULT_TARGET_MODULES, LoraConfigError, LoraSpec, add_lora
from cosmos_predict2.lora.adapters import file_sha256
from cosmos_predict2.networks import build_net, count_parameters, load_dit_weights, net_config
from cosmos_predict2.training.ema import PowerEMA

log = logging.getLogger(__name__)

TRAIN_ARCHITECTURES = ("lora", "full", "base")
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TOKENIZER_TYPES = ("wan2.1", "tiny_random")
RANDOM_INITS = ("random", "scratch")

DEFAULT_DIT_PATHS = {
    "2B": "checkpoints/nvidia/Cosmos-Predict2-2B-Video2World/model-720p-16fps.pt",
    "14B": "checkpoints/nvidia/Cosmos-Predict2-14B-Video2World/model-720p-16fps.pt",
}


@dataclass
class EMAConfig:
    enabled: bool = True
    rate: float = 0.1  # power-EMA s (SPEC 6)


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
    text_encoder_path: str = ""  # never loaded for training: the dataset carries T5 embeddings (SPEC 12)
    train_architecture: str = "full"  # "lora", or "full"/"base" = full fine-tuning
    lora_rank: int = 16
    lora_alpha: float = 16
    lora_target_modules: str = DEFAULT_TARGET_MODULES
    init_lora_weights: bool = True
    pipe_config: PipeConfig = field(default_factory=PipeConfig)
    # SPEC 2: training noise levels
    p_mean: float = 0.0
    p_std: float = 1.0
    video_noise_multiplier: bool = True  # sigma *= sqrt(T_latent)
    high_sigma_ratio: float = 0.05
    high_sigma_min: float = 200.0
    high_sigma_max: float = 1e5
    # SPEC 2: conditioning latent frames
    min_num_conditional_frames: int = 1
    max_num_conditional_frames: int = 2
    sigma_conditional: float = SIGMA_CONDITIONAL
    text_dropout_rate: float = 0.2  # probability of zeroing a sample's whole text embedding
    loss_scale: float = 10.0
    precision: str = "bf16"  # dtype of the frozen base (LoRA) / of the autocast compute (full)
    activation_checkpointing: str = "selective"  # "none", "full", "selective"
    fsdp_shard_size: int = 1  # ranks per FSDP shard group (reference: 8 for 2B, 32 for 14B)
    hash_base_checkpoint: bool = True  # record/verify sha256 of dit_path in LoRA checkpoints


def model_config_dict(**overrides: Any) -> dict:
    """The default model config as a plain dict (for the Hydra tree), with overrides merged in."""
    base = asdict(Video2WorldModelConfig())
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise KeyError(f"unknown model config fields {unknown}")
    base.update(overrides)
    return base


def parse_model_config(config: Any) -> Video2WorldModelConfig:
    """Dict (or DictConfig) -> validated dataclass; errors name the `model.config.*` key."""
    from cosmos_predict2.configs.lazy import _to_container

    d = dict(_to_container(config))
    unknown = sorted(set(d) - {f for f in Video2WorldModelConfig.__dataclass_fields__})
    if unknown:
        raise ValueError(f"unknown model.config fields {unknown}")
    pipe = dict(d.get("pipe_config") or {})
    ema = EMAConfig(**dict(pipe.get("ema") or {}))
    pipe_cfg = PipeConfig(ema=ema, **{k: v for k, v in pipe.items() if k != "ema"})
    cfg = Video2WorldModelConfig(**{**d, "pipe_config": pipe_cfg})

    def check(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ValueError(f"model.config.{key}={getattr(cfg, key)!r}: {msg}")

    check(cfg.train_architecture in TRAIN_ARCHITECTURES, "train_architecture", f"choose one of {TRAIN_ARCHITECTURES}")
    check(cfg.precision in PRECISIONS, "precision", f"choose one of {sorted(PRECISIONS)}")
    check(cfg.tokenizer_type in TOKENIZER_TYPES, "tokenizer_type", f"choose one of {TOKENIZER_TYPES}")
    check(cfg.random_init in RANDOM_INITS, "random_init", f"choose one of {RANDOM_INITS}")
    check(cfg.activation_checkpointing in ("none", "full", "selective"), "activation_checkpointing",
          "choose none, full or selective")  # fmt: skip
    check(0 <= cfg.text_dropout_rate <= 1, "text_dropout_rate", "must lie in [0, 1]")
    check(0 <= cfg.high_sigma_ratio <= 1, "high_sigma_ratio", "must lie in [0, 1]")
    check(1 <= cfg.min_num_conditional_frames <= cfg.max_num_conditional_frames, "min_num_conditional_frames",
          f"need 1 <= min <= max_num_conditional_frames ({cfg.max_num_conditional_frames})")  # fmt: skip
    check(cfg.sigma_conditional > 0, "sigma_conditional", "must be positive (reference: 1e-4)")
    check(cfg.lora_rank > 0, "lora_rank", "must be positive")
    return cfg


def _step_generator(device: torch.device, seed: int, rank: int, iteration: int) -> torch.Generator:
    """A generator for one training step, seeded from (seed, rank, iteration): a resumed run draws exactly the
    sigmas, noise and dropout an uninterrupted one would, with no generator state to checkpoint."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + rank * 10_007 + iteration) % (2**63 - 1))
    return g


class Video2WorldModel(nn.Module):
    """net (+ optional LoRA) + lazily loaded VAE + EMA; `training_step(batch, iteration)` returns the loss.

    Build happens in `setup(device)` (called by the trainer) so that instantiating the config is cheap and
    LoRA/config errors surface before any weights are read or any GPU memory is touched.
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = parse_model_config(config)
        self.net: nn.Module | None = None
        self.ema: PowerEMA | None = None
        self._tokenizer = None
        self.device = torch.device("cpu")
        self.seed, self.rank = 0, 0
        self._base_sha256: str | None = None

    # --- construction --------------------------------------------------------------------------------------

    @property
    def is_lora(self) -> bool:
        return self.config.train_architecture == "lora"

    @property
    def lora_spec(self) -> LoraSpec:
        c = self.config
        return LoraSpec(c.lora_rank, c.lora_alpha, c.lora_target_modules, c.init_lora_weights)

    @property
    def compute_dtype(self) -> torch.dtype:
        return PRECISIONS[self.config.precision]

    def net_kwargs(self) -> dict:
        kwargs = net_config(self.config.model_size, **dict(self.config.net))
        kwargs["activation_checkpointing"] = self.config.activation_checkpointing
        return kwargs

    def _meta_net(self) -> nn.Module:
        return build_net(self.net_kwargs(), device="meta", dtype=torch.float32)

    def check_trainable(self) -> tuple[int, int]:
        """Build on the meta device, apply LoRA/freezing, and return (total, trainable) parameter counts.
        Raises LoraConfigError for targets that match nothing or an empty trainable set; allocates nothing."""
        net = self._meta_net()
        if self.is_lora:
            add_lora(net, self.lora_spec)
        total, trainable = count_parameters(net), count_parameters(net, trainable_only=True)
        if trainable == 0:
            raise LoraConfigError(f"no trainable parameter with model.config.train_architecture="
                                  f"{self.config.train_architecture!r}")
        return total, trainable

    def setup(self, device: torch.device | str, seed: int = 0, rank: int = 0) -> None:
        self.device, self.seed, self.rank = torch.device(device), seed, rank
        c = self.config
        total, trainable = self.check_trainable()  # fail fast, before reading weights or touching the GPU
        if self.is_lora:
            log.info(f"Adding LoRA adapters: rank={c.lora_rank}, alpha={c.lora_alpha}, "
                     f"targets={self.lora_spec.target_modules}")  # fmt: skip
        net = self._meta_net()
        # LoRA: the frozen base lives in the compute dtype. Full: fp32 master weights, compute under autocast.
        base_dtype = self.compute_dtype if self.is_lora else torch.float32
        if c.dit_path:
            if not Path(c.dit_path).exists():
                raise FileNotFoundError(
                    f"model.config.dit_path={c.dit_path!r} does not exist: download the Cosmos-Predict2 checkpoint "
                    "(see the setup guide) or pass model.config.dit_path=<file> ('' trains from random weights)"
                )
            log.info(f"Loading base weights from {c.dit_path}")
            net = load_dit_weights(net, c.dit_path, dtype=base_dtype)
        else:
            from cosmos_predict2.networks.weights import initialize_weights, randomize_

            log.info(f"model.config.dit_path is empty: {c.random_init} initialisation (seed {seed})")
            if self.device.type == "cuda" and c.random_init == "random":
                # 2B/14B random weights (benchmarks): draw on the GPU; a CPU draw of 14e9 numbers takes minutes.
                net = _randomize_on_device_(net.to_empty(device=self.device), seed)
            else:
                net = net.to_empty(device="cpu")
                (randomize_ if c.random_init == "random" else initialize_weights)(net, seed)
            net = net.to(base_dtype)
        net = net.to(self.device)
        net.requires_grad_(True)
        if self.is_lora:
            torch.manual_seed(seed)  # PEFT's Kaiming init of lora_A draws from the global generator
            add_lora(net, self.lora_spec, adapter_dtype=torch.float32)
        self.net = net
        frozen = total - trainable
        size = f"{total / 1e9:.2f}B" if total >= 10**7 else f"{total / 1e6:.2f}M"
        log.info(f"Total parameters: {size}, Frozen parameters: {frozen:,}, "
                 f"Trainable parameters: {trainable:,}")  # fmt: skip

    def init_ema(self) -> None:
        """Create the EMA of the trainable weights. Called after parallelisation, so the shadows have the same
        (possibly sharded) layout as the parameters they follow."""
        c = self.config
        if c.pipe_config.ema.enabled:
            self.ema = PowerEMA(self.net, c.pipe_config.ema.rate)
            what = "LoRA adapters only: the frozen base is shared" if self.is_lora else "full network, fp32"
            log.info(f"EMA (power, rate {c.pipe_config.ema.rate}): {self.ema.num_parameters():,} parameters ({what})")

    def base_info(self) -> dict:
        """What a LoRA checkpoint records about its base (lora_config.base)."""
        c = self.config
        if self._base_sha256 is None and c.dit_path and c.hash_base_checkpoint and Path(c.dit_path).is_file():
            self._base_sha256 = file_sha256(c.dit_path)
        info = {"model_size": c.model_size, "dit_path": c.dit_path, "sha256": self._base_sha256 or "",
                "net_config": {k: v for k, v in self.net_kwargs().items() if k != "activation_checkpointing"}}
        if not c.dit_path:  # a random base is only reproducible from its init method and seed
            info.update(random_init=c.random_init, seed=self.seed)
        return info

    @property
    def tokenizer(self):
        """The VAE, loaded on first use: runs that train from cached latents never load it."""
        if self._tokenizer is None:
            from cosmos_predict2.tokenizers import WanVAETokenizer, tiny_vae_config

            c = self.config
            if c.tokenizer_type == "tiny_random":
                self._tokenizer = WanVAETokenizer.from_config(tiny_vae_config(), seed=0, device=self.device)
            else:
                self._tokenizer = WanVAETokenizer.from_pretrained(c.tokenizer_path, device=self.device)
        return self._tokenizer

    # --- training ------------------------------------------------------------------------------------------

    def get_latents(self, batch: dict) -> torch.Tensor:
        """Normalised latents [B, 16, T, H, W]: cached ones when the dataset provides them, else VAE-encoded."""
        if "latents" in batch:
            return batch["latents"].to(self.device, torch.float32, non_blocking=True)
        return self.tokenizer.encode(batch["video"].to(self.device, non_blocking=True)).float()

    def training_step(self, batch: dict, iteration: int) -> tuple[torch.Tensor, dict]:
        """One SPEC-2 loss evaluation (forward only; the trainer does backward/step)."""
        c = self.config
        assert self.net is not None, "call setup() first"
        x0_B_C_T_H_W = self.get_latents(batch)
        B, _, T = x0_B_C_T_H_W.shape[:3]
        g = _step_generator(self.device, self.seed, self.rank, iteration)

        text_B_L_D = batch["t5_text_embeddings"].to(self.device, torch.float32)
        expected = self.net_kwargs()["crossattn_emb_channels"]
        if text_B_L_D.shape[-1] != expected:
            raise ValueError(
                f"text embeddings are {text_B_L_D.shape[-1]}-wide but the network expects {expected} "
                f"(model.config.net.crossattn_emb_channels); re-embed the dataset or change the network"
            )
        keep_B = (torch.rand(B, generator=g, device=self.device) >= c.text_dropout_rate).float()
        text_B_L_D = text_B_L_D * keep_B[:, None, None]

        sampler = SigmaSampler(c.p_mean, c.p_std, c.video_noise_multiplier, c.high_sigma_ratio, c.high_sigma_min,
                               c.high_sigma_max)  # fmt: skip
        # SigmaSampler draws on the CPU in fp64; give it its own stream (seed + 1) so it is independent of `g`.
        sigma_B = sampler(B, T, generator=torch.Generator().manual_seed(g.initial_seed() + 1)).to(self.device)
        n_cond_B = torch.randint(c.min_num_conditional_frames, c.max_num_conditional_frames + 1, (B,),
                                 generator=g, device=self.device)  # fmt: skip
        n_cond_B = n_cond_B.clamp(max=T - 1) if T > 1 else n_cond_B.zero_()
        eps_B_C_T_H_W = torch.randn(x0_B_C_T_H_W.shape, generator=g, device=self.device, dtype=torch.float32)
        padding = batch.get("padding_mask")
        condition = Video2WorldCondition(
            crossattn_emb_B_L_D=text_B_L_D,
            gt_latents_B_C_T_H_W=x0_B_C_T_H_W,
            condition_mask_B_1_T_H_W=conditioning_mask(n_cond_B, x0_B_C_T_H_W.shape),
            fps=None,  # fps modulation of RoPE is off for every released model (SPEC 1)
            padding_mask=padding.to(self.device) if padding is not None else None,
        )
        autocast = (not self.is_lora) and self.compute_dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=autocast):
            loss, _ = video2world_loss(
                self.net, x0_B_C_T_H_W, sigma_B, eps_B_C_T_H_W, condition, c.loss_scale, c.sigma_conditional
            )
        return loss, {"sigma": sigma_B.detach(), "num_conditional_frames": n_cond_B.detach()}

    # --- state ---------------------------------------------------------------------------------------------

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """LoRA: the adapters; full: the whole network (fp32)."""
        from cosmos_predict2.lora import lora_state_dict

        sd = lora_state_dict(self.net) if self.is_lora else self.net.state_dict()
        return {k: _full_tensor(v) for k, v in sd.items()}


@torch.no_grad()
def _randomize_on_device_(net: nn.Module, seed: int) -> nn.Module:
    """Same distribution as networks.weights.randomize_ (norm weights ~1, others ~N(0, 1/fan_in)), drawn on the
    parameters' device."""
    g = torch.Generator(device=next(net.parameters()).device).manual_seed(seed)
    for name, p in net.named_parameters():
        if name.endswith("norm.weight") or "_norm." in name:
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g, device=p.device))
        else:
            p.copy_(torch.randn(p.shape, generator=g, device=p.device) / p.shape[-1] ** 0.5)
    return net


def _full_tensor(t: torch.Tensor) -> torch.Tensor:
    # FSDP2 parameters are DTensor shards; checkpoints hold whole tensors.
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()


__all__ = [
    "EMAConfig",
    "PipeConfig",
    "Video2WorldModel",
    "Video2WorldModelConfig",
    "model_config_dict",
    "parse_model_config",
]
