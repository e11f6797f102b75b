"""The Video2World training model: the DiT (optionally with LoRA), the VAE for on-the-fly latents, the EMA, and
the training step of docs/reference.md §2.

Precision policy:
  - LoRA: the frozen base in `precision` (bf16 on GPU), adapters stored in fp32 (the optimizer's master weights),
    no autocast. With `lora_compute_dtype="base"` (the default) the adapters compute in the base dtype, cast for
    each call and added into the layer's output in one fused step, as the reference's bf16 parameters do
    (lora/adapters.py `FusedLoraLinear`; 2B 720p step 12.87 -> 10.73 s on one H200); "float32" runs PEFT's fp32
    adapter math (the input cast to fp32 inside the down projection, which keeps the bf16 input for its backward:
    `LoraDown`).
  - full fine-tuning: the network is kept in fp32 (these are the optimizer's master weights) and the forward
    runs under `precision` autocast, so matmuls and attention run in bf16 as in the reference.
  - the loss, sigma, noise and preconditioning are fp32 (cosmos_predict2.diffusion.rectified_flow).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cosmos_predict2.configs.model_config import (
    AUTO_MEMORY_MODE,
    DEFAULT_DIT_PATHS,
    MEMORY_MODES,
    EMAConfig,
    ModelConfigError,
    PipeConfig,
    Video2WorldModelConfig,
    model_config_dict,
    parse_model_config,
)
from cosmos_predict2.diffusion.rectified_flow import (
    SigmaSampler,
    Video2WorldCondition,
    conditioning_mask,
    video2world_loss,
)
from cosmos_predict2.io import cached_file_sha256
from cosmos_predict2.lora import AdapterFile, LoraConfigError, LoraSpec, add_lora, load_adapter_weights
from cosmos_predict2.lora.spec import CONFIG_KEYS
from cosmos_predict2.networks import build_net, count_parameters, load_dit_weights, net_config
from cosmos_predict2.parallel.dtensor import full_state, is_sharded
from cosmos_predict2.training.checkpointer import CheckpointError
from cosmos_predict2.training.ema import PowerEMA

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# Network keywords that say how this run computes, not what the network is: not recorded as the adapter's base.
RUNTIME_NET_KEYS = ("activation_checkpointing", "activation_offload", "selective_checkpoint_budget_gib")


class ModelFileError(CheckpointError):
    """A model checkpoint that does not belong to this run (other architecture, LoRA config or base)."""


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
        return self.config.is_lora

    @property
    def lora_spec(self) -> LoraSpec:
        return self.config.lora_spec()

    @property
    def compute_dtype(self) -> torch.dtype:
        return DTYPES[self.config.precision]

    def net_kwargs(self) -> dict:
        kwargs = net_config(self.config.model_size, **dict(self.config.net))
        kwargs["activation_checkpointing"] = self.config.activation_checkpointing
        kwargs["activation_offload"] = self.config.offloads_activations
        kwargs["selective_checkpoint_budget_gib"] = self.config.selective_checkpoint_budget_gib
        if self.config.natten:
            from cosmos_predict2.networks.neighborhood import natten_parameters_for

            kwargs["natten_parameters"] = natten_parameters_for(self.config.model_size)
        return kwargs

    def _meta_net(self) -> nn.Module:
        return build_net(self.net_kwargs(), device="meta", dtype=torch.float32)

    def meta_net_with_adapters(self) -> nn.Module:
        """The network with its LoRA adapters (and freezing) on the meta device: allocates nothing."""
        net = self._meta_net()
        if self.is_lora:
            add_lora(net, self.lora_spec, compute_dtype=self.config.lora_compute_dtype)
        return net

    def check_trainable(self) -> tuple[int, int]:
        """Build on the meta device, apply LoRA/freezing, and return (total, trainable) parameter counts.
        Raises LoraConfigError for targets that match nothing or an empty trainable set; allocates nothing."""
        net = self.meta_net_with_adapters()
        total, trainable = count_parameters(net), count_parameters(net, trainable_only=True)
        if trainable == 0:
            raise LoraConfigError(f"no trainable parameter with model.config.train_architecture="
                                  f"{self.config.train_architecture!r}")
        return total, trainable

    def _warn_unused_lora_fields(self) -> None:
        """The guide's troubleshooting item 1: LoRA fields set while train_architecture is not "lora" train
        nothing of what they describe. Say so loudly instead of silently fine-tuning the whole network."""
        if self.is_lora:
            return
        defaults = Video2WorldModelConfig()
        changed = [key for key in CONFIG_KEYS.values() if getattr(self.config, key) != getattr(defaults, key)]
        if changed:
            log.warning(f"model.config sets {', '.join(changed)} but model.config.train_architecture="
                        f"{self.config.train_architecture!r}: the LoRA fields are ignored and the whole network "
                        "trains. Add model.config.train_architecture=lora to train LoRA adapters.")  # fmt: skip

    def parameter_report(self) -> list[str]:
        """The guide's "Adding LoRA adapters" and "Total parameters" lines, from the meta-device network (so
        `--dryrun` prints them without reading a weight). Counts are per copy of the network: the reference's
        lines also count its EMA copy, which doubles them (docs/guide.md)."""
        total, trainable = self.check_trainable()
        lines = [f"Adding LoRA adapters: {self.lora_spec.describe()}"] if self.is_lora else []
        size = f"{total / 1e9:.2f}B" if total >= 10**7 else f"{total / 1e6:.2f}M"
        lines.append(f"Total parameters: {size}, Frozen parameters: {total - trainable:,}, "
                     f"Trainable parameters: {trainable:,}")  # fmt: skip
        return lines

    def memory_plan(self, latent_T_H_W: tuple[int, int, int], gpu_memory_gib: float | None,
                    host_memory_gib: float | None = None):  # fmt: skip
        """(every memory mode's predicted peak and step time, fastest first; the fastest that fits or None)."""
        from cosmos_predict2.training import memory_plan

        weight_bytes = 2 if self.config.base_weight_storage == "bf16" else 1
        rows = memory_plan.plan(memory_plan.NetCounts.of(self.meta_net_with_adapters()), latent_T_H_W, weight_bytes,
                                gpu_memory_gib, host_memory_gib)  # fmt: skip
        if _world_size() > 1:  # FSDP shards the weights (and cannot shard host-resident ones): no streaming
            rows = [p for p in rows if not MEMORY_MODES[p.memory_mode][1]]
        chosen = memory_plan.choose(rows, gpu_memory_gib, host_memory_gib) if gpu_memory_gib is not None else None
        return rows, chosen

    def resolve_memory_mode(self, latent_T_H_W: tuple[int, int, int] | None, gpu_memory_gib: float | None,
                            host_memory_gib: float | None = None) -> None:  # fmt: skip
        """memory_mode=auto: the fastest memory mode and checkpointing that the planner says fit (what `--dryrun`
        names); the default mode without a GPU or a latent shape to plan for, the smallest plan if none fits."""
        if self.config.memory_mode != AUTO_MEMORY_MODE:
            return
        chosen = None
        if latent_T_H_W is not None and gpu_memory_gib is not None and self.is_lora:
            rows, chosen = self.memory_plan(latent_T_H_W, gpu_memory_gib, host_memory_gib)
            if chosen is None:
                chosen = min(rows, key=lambda p: p.peak_gib)
                log.warning(f"memory_mode=auto: no mode is predicted to fit {gpu_memory_gib:.0f} GiB; trying the "
                            f"smallest ({chosen.peak_gib:.1f} GiB predicted)")  # fmt: skip
        if chosen is None:
            self.config.memory_mode = "default"
        else:
            self.config.memory_mode, self.config.activation_checkpointing = chosen.memory_mode, chosen.checkpointing
            if chosen.budget_gib is not None:
                self.config.selective_checkpoint_budget_gib = chosen.budget_gib
        budget = self.config.selective_checkpoint_budget_gib
        log.info(f"memory_mode=auto -> memory_mode={self.config.memory_mode}, "
                 f"activation_checkpointing={self.config.activation_checkpointing}"
                 + (f", selective_checkpoint_budget_gib={budget:g}" if budget is not None else ""))  # fmt: skip

    def setup(self, device: torch.device | str, seed: int = 0, rank: int = 0,
              latent_shape_T_H_W: tuple[int, int, int] | None = None) -> None:  # fmt: skip
        """latent_shape_T_H_W: the training latents' size, for memory_mode=auto (training/memory_plan.py)."""
        self.device, self.seed, self.rank = torch.device(device), seed, rank
        self._warn_unused_lora_fields()
        report = self.parameter_report()  # fail fast, before reading weights or touching the GPU
        for line in report[:-1]:
            log.info(line)
        if self.config.memory_mode == AUTO_MEMORY_MODE:
            from cosmos_predict2.training.memory_plan import gpu_memory_gib, host_memory_gib

            self.resolve_memory_mode(latent_shape_T_H_W, gpu_memory_gib(self.device), host_memory_gib())
        stream = self.config.streams_weights
        if stream and _world_size() > 1:
            raise ModelConfigError(f"model.config.memory_mode={self.config.memory_mode!r} streams weights from "
                                   "host memory, which FSDP cannot shard: use it with one process")  # fmt: skip
        # Streaming: a checkpoint is read into host memory, where the frozen block weights stay (docs/memory.md).
        net = self._load_base(self._meta_net(), device=torch.device("cpu") if stream else self.device)
        net.requires_grad_(True)
        if self.is_lora:
            torch.manual_seed(seed)  # PEFT's Kaiming init of lora_A draws from the global generator
            add_lora(net, self.lora_spec, adapter_dtype=torch.float32, compute_dtype=self.config.lora_compute_dtype)
        if self.config.base_weight_storage != "bf16":
            from cosmos_predict2.networks.fp8 import store_frozen_weights_fp8

            n = store_frozen_weights_fp8(net, self.config.base_weight_storage)
            log.info(f"{n} frozen block Linear weights stored as {self.config.base_weight_storage} (lossy)")
        if stream:
            from cosmos_predict2.networks.streaming import apply_weight_streaming

            apply_weight_streaming(net, self.device)
        self.net = net
        log.info(report[-1])
        if self.config.memory_mode != "default":
            log.info(f"Memory mode {self.config.memory_mode}: activations offloaded "
                     f"{self.config.offloads_activations}, frozen block weights streamed {stream}")  # fmt: skip

    def _load_base(self, net: nn.Module, device: torch.device) -> nn.Module:
        """Base weights from dit_path (assigned into the meta network: one copy), or a seeded initialisation."""
        c = self.config
        # LoRA: the frozen base lives in the compute dtype. Full: fp32 master weights, compute under autocast.
        base_dtype = self.compute_dtype if self.is_lora else torch.float32
        if c.dit_path:
            if not Path(c.dit_path).exists():
                raise FileNotFoundError(
                    f"model.config.dit_path={c.dit_path!r} does not exist: download the Cosmos-Predict2 checkpoint "
                    "(see the setup guide) or pass model.config.dit_path=<file> ('' trains from random weights)"
                )
            log.info(f"Loading base weights from {c.dit_path}")
            return load_dit_weights(net, c.dit_path, dtype=base_dtype, device=device)
        from cosmos_predict2.networks.weights import initialize_weights, randomize_

        log.info(f"model.config.dit_path is empty: {c.random_init} initialisation (seed {self.seed})")
        if self.device.type == "cuda" and c.random_init == "random":
            # 2B/14B random weights (benchmarks): draw on the GPU; a CPU draw of 14e9 numbers takes minutes.
            net = randomize_(net.to_empty(device=self.device), self.seed)
        else:
            net = net.to_empty(device="cpu")
            (randomize_ if c.random_init == "random" else initialize_weights)(net, self.seed)
        return net.to(base_dtype).to(device)

    def init_ema(self) -> None:
        """Create the EMA of the trainable weights. Called after parallelisation, so the shadows have the same
        (possibly sharded) layout as the parameters they follow."""
        c = self.config
        if c.pipe_config.ema.enabled:
            self.ema = PowerEMA(self.net, c.pipe_config.ema.rate)
            what = "LoRA adapters only: the frozen base is shared" if self.is_lora else "full network, fp32"
            log.info(f"EMA (power, rate {c.pipe_config.ema.rate}): {self.ema.num_parameters():,} parameters ({what})")

    def base_info(self) -> dict:
        """What a LoRA checkpoint records about its base (lora_config.base): the path as configured and its absolute
        form (inference resolves either from anywhere), the file's size and sha256 (inference checks them; the
        hash is cached across runs, see `cosmos_predict2.io.cached_file_sha256`)."""
        c = self.config
        is_file = bool(c.dit_path) and Path(c.dit_path).is_file()
        if self._base_sha256 is None and is_file and c.hash_base_checkpoint:
            self._base_sha256 = cached_file_sha256(c.dit_path)
        info = {"model_size": c.model_size, "dit_path": c.dit_path, "sha256": self._base_sha256 or "",
                "net_config": {k: v for k, v in self.net_kwargs().items() if k not in RUNTIME_NET_KEYS}}
        if c.dit_path:
            info["dit_path_abs"] = str(Path(c.dit_path).resolve())
        if is_file:
            info["size"] = Path(c.dit_path).stat().st_size
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

    def text_embeddings(self, batch: dict) -> torch.Tensor:
        """The batch's text embeddings on the device (fp32), checked against the network's cross-attention width."""
        text_B_L_D = batch["t5_text_embeddings"].to(self.device, torch.float32)
        expected = self.net_kwargs()["crossattn_emb_channels"]
        if text_B_L_D.shape[-1] != expected:
            raise ValueError(
                f"text embeddings are {text_B_L_D.shape[-1]}-wide but the network expects {expected} "
                f"(model.config.net.crossattn_emb_channels); re-embed the dataset or change the network"
            )
        return text_B_L_D

    def forward_context(self):
        """Full fine-tuning keeps fp32 master weights and runs the forward under `precision` autocast; LoRA runs
        its bf16 base as it is (module docstring). Training, validation and held-out generation all use this."""
        autocast = (not self.is_lora) and self.compute_dtype != torch.float32
        return torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=autocast)

    def sigma_sampler(self) -> SigmaSampler:
        c = self.config
        return SigmaSampler(c.p_mean, c.p_std, c.video_noise_multiplier, c.high_sigma_ratio, c.high_sigma_min,
                            c.high_sigma_max)  # fmt: skip

    def _loss(self, batch: dict, x0_B_C_T_H_W: torch.Tensor, text_B_L_D: torch.Tensor, sigma_B: torch.Tensor,
              eps_B_C_T_H_W: torch.Tensor, n_cond_B: torch.Tensor) -> torch.Tensor:
        """The one loss path (docs/reference.md §2) behind `training_step` and `loss_at`."""
        c = self.config
        padding = batch.get("padding_mask")
        condition = Video2WorldCondition(
            crossattn_emb_B_L_D=text_B_L_D,
            gt_latents_B_C_T_H_W=x0_B_C_T_H_W,
            condition_mask_B_1_T_H_W=conditioning_mask(n_cond_B, x0_B_C_T_H_W.shape),
            fps=None,  # fps modulation of RoPE is off for every released model (docs/reference.md §1)
            padding_mask=padding.to(self.device) if padding is not None else None,
        )
        with self.forward_context():
            loss, _ = video2world_loss(
                self.net, x0_B_C_T_H_W, sigma_B, eps_B_C_T_H_W, condition, c.loss_scale, c.sigma_conditional
            )
        return loss

    def training_step(self, batch: dict, iteration: int) -> tuple[torch.Tensor, dict]:
        """One loss evaluation of docs/reference.md §2 (forward only; the trainer does backward/step)."""
        c = self.config
        assert self.net is not None, "call setup() first"
        x0_B_C_T_H_W = self.get_latents(batch)
        B, _, T = x0_B_C_T_H_W.shape[:3]
        g = _step_generator(self.device, self.seed, self.rank, iteration)
        text_B_L_D = self.text_embeddings(batch)
        keep_B = (torch.rand(B, generator=g, device=self.device) >= c.text_dropout_rate).float()
        text_B_L_D = text_B_L_D * keep_B[:, None, None]
        # SigmaSampler draws on the CPU in fp64; give it its own stream (seed + 1) so it is independent of `g`.
        sigma_B = self.sigma_sampler()(B, T, generator=torch.Generator().manual_seed(g.initial_seed() + 1))
        sigma_B = sigma_B.to(self.device)
        n_cond_B = torch.randint(c.min_num_conditional_frames, c.max_num_conditional_frames + 1, (B,),
                                 generator=g, device=self.device)  # fmt: skip
        n_cond_B = n_cond_B.clamp(max=T - 1) if T > 1 else n_cond_B.zero_()
        eps_B_C_T_H_W = torch.randn(x0_B_C_T_H_W.shape, generator=g, device=self.device, dtype=torch.float32)
        loss = self._loss(batch, x0_B_C_T_H_W, text_B_L_D, sigma_B, eps_B_C_T_H_W, n_cond_B)
        return loss, {"sigma": sigma_B.detach(), "num_conditional_frames": n_cond_B.detach()}

    def loss_at(self, batch: dict, sigma: float, noise_seed: int, num_conditional_frames: int) -> torch.Tensor:
        """The training loss of `batch` at a fixed sigma, with noise drawn from `noise_seed` and a fixed number of
        conditioning latent frames, the text always kept: the validation loss (training/evaluation.py). Same code
        path as `training_step`; deterministic for given inputs and weights."""
        assert self.net is not None, "call setup() first"
        x0_B_C_T_H_W = self.get_latents(batch)
        B, _, T = x0_B_C_T_H_W.shape[:3]
        g = torch.Generator(device=self.device).manual_seed(int(noise_seed) % (2**63 - 1))
        eps_B_C_T_H_W = torch.randn(x0_B_C_T_H_W.shape, generator=g, device=self.device, dtype=torch.float32)
        sigma_B = torch.full((B,), float(sigma), device=self.device)
        n_cond_B = torch.full((B,), min(int(num_conditional_frames), max(T - 1, 0)), device=self.device)
        return self._loss(batch, x0_B_C_T_H_W, self.text_embeddings(batch), sigma_B, eps_B_C_T_H_W, n_cond_B)

    # --- the model file (JOB/checkpoints/model/iter_*.pt) ------------------------------------------------

    def model_file_state(self, is_main: bool = True) -> dict | None:
        """What this run's model file holds. LoRA: our self-describing adapter file (adapters + EMA + base
        identity); full fine-tuning: `net.*` (+ `net_ema.*`), the reference layout. Every rank must call this
        (sharded tensors are gathered); only `is_main` gets the dict, the others None."""
        from cosmos_predict2.lora import lora_state_dict

        weights = full_state(lora_state_dict(self.net) if self.is_lora else self.net.state_dict(), keep=is_main)
        ema = full_state(self.ema.shadow, keep=is_main) if self.ema is not None else None
        if not is_main:
            return None
        if self.is_lora:
            return AdapterFile(self.lora_spec, self.base_info(), weights, ema).to_state()
        state = {"net." + k: v for k, v in weights.items()}
        state.update({"net_ema." + k: v for k, v in (ema or {}).items()})
        return state

    def load_model_file_state(self, state: Mapping, source: str) -> None:
        """Restore the trained weights (and EMA) from a model file written by `model_file_state`; refuses a file
        of another architecture, LoRA config or base model."""
        from cosmos_predict2.lora import is_adapter_checkpoint

        if self.is_lora and not is_adapter_checkpoint(state):
            raise ModelFileError(f"{source} is not a LoRA adapter checkpoint, but this run trains LoRA")
        if not self.is_lora and is_adapter_checkpoint(state):
            raise ModelFileError(f"{source} is a LoRA adapter checkpoint, but this run is full fine-tuning")
        if self.is_lora:
            adapter = AdapterFile.from_state(state, source)
            self._check_adapter_belongs(adapter, source)
            load_adapter_weights(self.net, adapter.weights, source)
            ema_weights = adapter.ema or {}
        else:
            from cosmos_predict2.networks.weights import extract_prefixed

            _load_full_net(self.net, extract_prefixed(state, "net."))
            ema_weights = extract_prefixed(state, "net_ema.")
        if self.ema is not None:
            if not ema_weights:
                raise ModelFileError(f"{source} has no EMA weights but model.config.pipe_config.ema.enabled is true")
            self.ema.load_state_dict(ema_weights, source)

    def _check_adapter_belongs(self, adapter: AdapterFile, source: str) -> None:
        """Resuming needs the same LoRA config and the same base: the adapters only make sense on it."""
        ours, theirs = self.lora_spec, adapter.spec
        if (theirs.rank, float(theirs.alpha), sorted(theirs.target_modules)) != (
            ours.rank, float(ours.alpha), sorted(ours.target_modules)
        ):
            raise LoraConfigError(
                f"{source} was trained with rank={theirs.rank}, alpha={theirs.alpha}, targets={theirs.target_modules}"
                f" but the config says rank={ours.rank}, alpha={ours.alpha}, targets={ours.target_modules}; "
                "resume with the same model.config.lora_* values or use a new job name"
            )
        c, base = self.config, adapter.base
        if base.get("model_size") not in (None, c.model_size):
            raise ModelFileError(f"{source} was trained on model_size {base.get('model_size')}, config says "
                                 f"{c.model_size}")  # fmt: skip
        recorded = base.get("sha256")
        if recorded and c.hash_base_checkpoint and c.dit_path:
            current = self.base_info()["sha256"]
            if current and current != recorded:
                raise ModelFileError(
                    f"{source} was trained on base weights {base.get('dit_path')} (sha256 {recorded[:12]}...) but "
                    f"model.config.dit_path={c.dit_path} has sha256 {current[:12]}...; resume with the same base"
                )


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _load_full_net(net: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    if is_sharded(net):  # FSDP2: each rank keeps its shard of the whole tensors
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(net, weights, options=StateDictOptions(full_state_dict=True))
    else:
        net.load_state_dict(weights, strict=True)


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


__all__ = [
    "DEFAULT_DIT_PATHS",
    "EMAConfig",
    "ModelFileError",
    "PipeConfig",
    "Video2WorldModel",
    "Video2WorldModelConfig",
    "model_config_dict",
    "parse_model_config",
]
