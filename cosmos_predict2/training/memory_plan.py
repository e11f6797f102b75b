"""The memory planner: predicted peak GPU memory and step time of a LoRA training step for each memory mode and
activation-checkpointing mode (docs/memory.md), from parameter counts (a meta-device network: nothing is
allocated) and the activation bytes per block. `--dryrun` prints the table; `model.config.memory_mode=auto`
takes the fastest mode that fits.

The model, per step of batch 1 (u = one block input [L, D] in the compute dtype, L = T * H/2 * W/2 tokens):
  peak = frozen weights on the GPU + 20 B per trainable parameter (fp32 weight, grad, two AdamW moments, EMA)
         + the saved block inputs (N u) + the self-attention outputs selective checkpointing keeps (N u), both
         none when offloaded + one block's recompute + backward working set (WORKING_SET_U u).
  time = linear FLOPs / R_LINEAR + attention FLOPs / R_ATTENTION + activation bytes / R_ELEMENTWISE, and for the
         low-memory modes each phase takes at least its host<->device copies at HOST_LINK_GBPS.
Calibrated on the rows measured on one H200 with FlashAttention-4 and the default fused bf16 adapters
(BENCHMARKS.md, `MEASURED` below): the three peaks measured with the current code within 1.0%, every time within
2.0%; before the 2026-12-04 change of the MLP's backward (a uniform -6.8 u of working set, measured on three rows both
ways) every peak was within 2.2%, a partial selective row (2B 720p, 21 of 28 blocks kept) within 1%, and two 14B
low-memory selective rows measured after calibration within 1.3%. Everything else (other resolutions and GPUs,
weight streaming alone) is a prediction; the step time is the H200's. PEFT's fp32 adapter path
(lora_compute_dtype=float32, a network without FusedLoraLinear) adds its measured extra working set and time
(FP32_ADAPTER_*; its ten rows, MEASURED_FP32_ADAPTERS, within 4.8% peak and 3.0% time).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from peft.tuners.lora.layer import Linear as PeftLoraLinear

from cosmos_predict2.configs.model_config import MEMORY_MODES
from cosmos_predict2.lora.adapters import FusedLoraLinear

GIB = 2**30
# One block's recompute + backward working set in units of u, fitted on the measured peaks: the tensors the block
# saves for its own backward (the adapted layers' inputs, the MLP's 4D hidden, the q/k norms' inputs, attention's
# q/k/v/out) plus the backward's gradients in flight. 30.9 u until 2026-12-04, when the fused adapters began to form
# each input gradient in one buffer and the MLP's second projection to keep the GELU's input instead of its output
# (lora/adapters.py `_LinearWithLora`): -6.3 to -7.5 u on the three rows measured both ways (BENCHMARKS.md).
WORKING_SET_U = 24.1
# Nested checkpointing (networks/dit.py) holds one sub-layer's tensors at a time plus the three sub-layer inputs and
# the handed-off self-attention output: 21.4 u fitted on the two nested peaks of 2026-12-03, 2.8 u less measured
# after the input gradients moved into one buffer (before the GELU change, which can only lower it further).
WORKING_SET_NESTED_U = 18.6
TRAINABLE_BYTES = 20  # fp32 parameter, gradient, AdamW exp_avg and exp_avg_sq, EMA shadow
# Effective H200 rates fitted on the measured step times (not hardware peaks: the elementwise term absorbs
# LayerNorm/RMSNorm/RoPE/GELU and the adapters' small products, which scale with the activation bytes). With PEFT's
# fp32 adapter path (lora_compute_dtype=float32) the elementwise rate was 7.43e9 (its fp32 temporaries).
R_LINEAR = 668e12  # FLOP/s
R_ATTENTION = 682e12  # FLOP/s, FlashAttention-4 (cuDNN measured 1.09x slower on the 2B 720p step)
R_ELEMENTWISE = 2.6e10  # activation bytes per second of per-element work
# PEFT's fp32 adapter path (lora_compute_dtype=float32) against the fused adapters, on the seven rows measured both
# ways (MEASURED_FP32_ADAPTERS / the fused rows of 2026-12-03): its [tokens, out] fp32 temporaries added 5.3 u to
# the working set (3.7 u nested) and 0.21-0.27 s per GB of block activations (act bytes) to the step; the fused
# working set has since shrunk by 6.8 u (2.8 u nested), PEFT's path has not.
FP32_ADAPTER_EXTRA_U, FP32_ADAPTER_EXTRA_NESTED_U = 5.3 + 6.8, 3.7 + 2.8
FP32_ADAPTER_S_PER_BYTE = 0.24e-9
HOST_LINK_GBPS = 40.0  # pinned host <-> device copies over PCIe Gen5, per direction
# A plan fits when peak allocated * ALLOCATOR_HEADROOM + CUDA_CONTEXT_GIB <= the GPU's memory: the caching allocator
# reserved 1.11-1.30x the allocated peak in the measured rows.
ALLOCATOR_HEADROOM = 1.25
CUDA_CONTEXT_GIB = 1.0
HOST_FRACTION = 0.75  # of the machine's memory, for pinned buffers (the data loader and Python need the rest)
CHECKPOINTING = ("selective", "full", "nested")
TEXT_TOKENS = 512

# The measured rows the constants are calibrated on (BENCHMARKS.md, one H200, FlashAttention-4, the default fused bf16
# adapters `lora_compute_dtype=base`): (size, rank, latent T,H,W, checkpointing, memory mode, s/step, peak allocated
# GiB). A peak of None: measured (2026-12-03) before the 2026-12-04 change of the MLP's backward, which lowered the
# peaks and left the times within 0.2% (A/B on the same GPU); those rows check the time model only.
LATENT_720P, LATENT_480P = (24, 88, 160), (24, 54, 96)
MEASURED = [
    ("2B", 16, LATENT_720P, "selective", "default", 10.844, 29.90),  # 2026-12-04
    ("2B", 16, LATENT_480P, "selective", "default", 1.985, 13.64),  # 2026-12-04
    ("14B", 32, LATENT_720P, "selective", "offload_activations", 40.905, 51.37),  # 2026-12-04
    ("2B", 16, LATENT_720P, "selective", "offload_activations", 10.781, None),
    ("2B", 16, LATENT_720P, "full", "low", 13.143, None),
    ("2B", 16, LATENT_720P, "nested", "low", 13.439, None),
    ("14B", 32, LATENT_720P, "full", "default", 48.844, None),
    ("14B", 32, LATENT_720P, "nested", "low", 49.787, None),
    ("14B", 32, LATENT_720P, "selective", "low", 40.837, None),
    ("14B", 32, LATENT_480P, "selective", "low", 8.396, None),
]
# The same kind of rows with PEFT's fp32 adapter path (lora_compute_dtype=float32; 2026-12-02/03, FA4, BENCHMARKS.md).
MEASURED_FP32_ADAPTERS = [
    ("2B", 16, LATENT_720P, "selective", "default", 12.939, 33.73),
    ("2B", 16, LATENT_480P, "selective", "default", 2.734, 15.01),
    ("2B", 16, LATENT_720P, "full", "low", 15.346, 13.21),
    ("2B", 16, LATENT_720P, "nested", "low", 15.895, 9.93),
    ("14B", 32, LATENT_720P, "full", "default", 55.397, 87.07),
    ("2B", 16, LATENT_720P, "selective", "offload_activations", 13.236, 16.9),
    ("14B", 32, LATENT_720P, "selective", "offload_activations", 48.732, 61.0),
    ("14B", 32, LATENT_480P, "selective", "low", 11.134, 16.1),
    ("14B", 32, LATENT_720P, "full", "low", 56.622, 35.3),
    ("14B", 32, LATENT_720P, "nested", "low", 58.307, 27.10),
]


@dataclass(frozen=True)
class NetCounts:
    """What the planner needs of a network with its LoRA adapters (counted on the meta device)."""

    num_blocks: int
    dim: int
    mlp_dim: int
    frozen_block: int  # frozen parameters of one block (the streamed ones)
    frozen_rest: int  # frozen parameters outside the blocks
    trainable: int
    patch_spatial: int = 2
    fp32_adapters: bool = False  # PEFT's fp32 adapter forward (lora_compute_dtype=float32), not FusedLoraLinear

    @classmethod
    def of(cls, net: torch.nn.Module) -> NetCounts:
        frozen_blocks = [sum(p.numel() for p in b.parameters() if not p.requires_grad) for b in net.blocks]
        frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
        block = net.blocks[0]
        return cls(num_blocks=len(net.blocks), dim=net.model_channels, mlp_dim=block.mlp.layer1.out_features,
                   frozen_block=max(frozen_blocks), frozen_rest=frozen - sum(frozen_blocks),
                   trainable=sum(p.numel() for p in net.parameters() if p.requires_grad),
                   patch_spatial=net.patch_spatial, fp32_adapters=any(
                       isinstance(m, PeftLoraLinear) and not isinstance(m, FusedLoraLinear) for m in net.modules()))


@dataclass(frozen=True)
class Prediction:
    memory_mode: str
    checkpointing: str
    peak_gib: float
    s_per_step: float
    host_gib: float  # pinned host memory the mode holds
    # Selective checkpointing that keeps the self-attention outputs of only the first `kept_blocks` blocks
    # (model.config.selective_checkpoint_budget_gib=budget_gib); None: every block's.
    kept_blocks: int | None = None
    budget_gib: float | None = None

    @property
    def label(self) -> str:
        """The checkpointing as the table prints it: 'selective 29/36' for a partial one."""
        return self.checkpointing if self.kept_blocks is None else f"{self.checkpointing} {self.kept_blocks}"

    def overrides(self) -> str:
        """The config overrides that run this plan."""
        text = f"model.config.memory_mode={self.memory_mode} model.config.activation_checkpointing={self.checkpointing}"
        return text + (f" model.config.selective_checkpoint_budget_gib={self.budget_gib:g}"
                       if self.budget_gib is not None else "")  # fmt: skip

    def fits(self, gpu_memory_gib: float, host_memory_gib: float | None = None) -> bool:
        """GPU: peak with the allocator's headroom; host (when known): the page-locked buffers (their exact size,
        networks/host_memory.py) within HOST_FRACTION of the machine's memory."""
        host_ok = host_memory_gib is None or self.host_gib <= HOST_FRACTION * host_memory_gib
        return host_ok and self.peak_gib * ALLOCATOR_HEADROOM + CUDA_CONTEXT_GIB <= gpu_memory_gib


def tokens(counts: NetCounts, latent_T_H_W: tuple[int, int, int]) -> int:
    T, H, W = latent_T_H_W
    return T * (H // counts.patch_spatial) * (W // counts.patch_spatial)


def predict_peak_gib(counts: NetCounts, latent_T_H_W: tuple[int, int, int], checkpointing: str, memory_mode: str,
                     kept_per_block: int = 1, dtype_bytes: int = 2, ahead: int = 1,
                     block_weight_bytes: int = 2, kept_blocks: int | None = None) -> float:  # fmt: skip
    """Peak allocated GPU memory of one LoRA step. kept_per_block: attention outputs selective checkpointing keeps
    per block (1: self-attention, the current policy); block_weight_bytes: 1 with fp8 storage of the frozen block
    weights (networks/fp8.py); kept_blocks: how many blocks keep them (None: all)."""
    offload, stream = MEMORY_MODES[memory_mode]
    u = tokens(counts, latent_T_H_W) * counts.dim * dtype_bytes
    blocks_on_gpu = min(ahead + 1, counts.num_blocks) if stream else counts.num_blocks
    weights = counts.frozen_rest * dtype_bytes + blocks_on_gpu * counts.frozen_block * block_weight_bytes
    kept = kept_per_block if checkpointing == "selective" else 0
    keeping = counts.num_blocks if kept_blocks is None else kept_blocks
    saved = 0 if offload else (counts.num_blocks + kept * keeping) * u
    working_u = WORKING_SET_NESTED_U if checkpointing == "nested" else WORKING_SET_U
    if counts.fp32_adapters:
        working_u += FP32_ADAPTER_EXTRA_NESTED_U if checkpointing == "nested" else FP32_ADAPTER_EXTRA_U
    # offload: the block's input and kept outputs copied back, and the next block's (prefetched)
    working = (working_u + (2 * (1 + kept) if offload else 0)) * u
    return (weights + counts.trainable * TRAINABLE_BYTES + saved + working) / GIB


def _flops(counts: NetCounts, L: int) -> tuple[float, float]:
    """(token-linear, attention) forward FLOPs of the blocks: q/k/v/output, cross q/output, the MLP; QK^T and PV."""
    D, N = counts.dim, counts.num_blocks
    linear = 2 * L * (6 * D * D + 2 * D * counts.mlp_dim) * N
    attention = 4 * L * (L + TEXT_TOKENS) * D * N
    return linear, attention


def predict_seconds(counts: NetCounts, latent_T_H_W: tuple[int, int, int], checkpointing: str, memory_mode: str,
                    dtype_bytes: int = 2, kept_blocks: int | None = None) -> float:  # fmt: skip
    """One step: forward, the recompute (selective keeps self-attention), the backward (frozen linears: input
    gradient only; attention: ~2.5x its forward). Nested checkpointing recomputes the attention sub-layers' linear
    layers (6 of the 14 D^2 per token) and their elementwise work once more. kept_blocks: under selective
    checkpointing, the blocks that keep their attention output (None: all); the others recompute it as under full."""
    L = tokens(counts, latent_T_H_W)
    linear, attention = _flops(counts, L)
    D = counts.dim
    linear_passes = 3 + (6 * D * D / (6 * D * D + 2 * D * counts.mlp_dim) if checkpointing == "nested" else 0)
    act_bytes = L * counts.dim * counts.num_blocks * dtype_bytes
    keeping = 0 if checkpointing != "selective" else counts.num_blocks if kept_blocks is None else kept_blocks
    kept_share = keeping / counts.num_blocks
    attention_passes = 4.5 - kept_share  # a kept output saves the recompute's attention forward
    elementwise_passes = 3.5 if checkpointing == "nested" else 3.0 - 0.5 * kept_share
    compute = (linear_passes * linear / R_LINEAR + attention_passes * attention / R_ATTENTION
               + elementwise_passes * act_bytes / R_ELEMENTWISE
               + (FP32_ADAPTER_S_PER_BYTE * act_bytes if counts.fp32_adapters else 0.0))  # fmt: skip
    offload, stream = MEMORY_MODES[memory_mode]
    # Copies overlap compute; a phase (forward 1/3, recompute + backward 2/3) is at least as long as its copies.
    per_pass = (act_bytes if offload else 0) + (counts.frozen_block * counts.num_blocks * dtype_bytes if stream else 0)
    link = per_pass / (HOST_LINK_GBPS * 1e9)
    return max(compute / 3, link) + max(2 * compute / 3, link)


def predict(counts: NetCounts, latent_T_H_W: tuple[int, int, int], checkpointing: str, memory_mode: str,
            dtype_bytes: int = 2, block_weight_bytes: int = 2,
            kept_blocks: int | None = None) -> Prediction:  # fmt: skip
    offload, stream = MEMORY_MODES[memory_mode]
    u = tokens(counts, latent_T_H_W) * counts.dim * dtype_bytes
    kept = 1 if checkpointing == "selective" else 0
    host = (counts.num_blocks * (1 + kept) * u if offload else 0) + (
        counts.num_blocks * counts.frozen_block * block_weight_bytes if stream else 0)
    peak = predict_peak_gib(counts, latent_T_H_W, checkpointing, memory_mode, dtype_bytes=dtype_bytes,
                            block_weight_bytes=block_weight_bytes, kept_blocks=kept_blocks)  # fmt: skip
    seconds = predict_seconds(counts, latent_T_H_W, checkpointing, memory_mode, dtype_bytes, kept_blocks)
    # the budget that keeps exactly kept_blocks outputs (networks/dit.py: budget // one output's bytes)
    budget = None if kept_blocks is None else round((kept_blocks + 0.5) * u / GIB, 2)
    return Prediction(memory_mode, checkpointing, peak, seconds, host / GIB, kept_blocks, budget)


def partial_selective(counts: NetCounts, latent_T_H_W: tuple[int, int, int], memory_mode: str,
                      gpu_memory_gib: float, host_memory_gib: float | None = None,
                      block_weight_bytes: int = 2) -> Prediction | None:  # fmt: skip
    """Selective checkpointing with a budget: the most blocks (1 to N-1) whose kept self-attention outputs still fit
    `gpu_memory_gib` in a mode that keeps them on the GPU; None when none fits, or all N do (plain selective)."""
    if MEMORY_MODES[memory_mode][0]:
        return None  # offloaded: the kept outputs wait in host memory, keeping them all costs no GPU memory
    fitting = None
    for k in range(1, counts.num_blocks):
        p = predict(counts, latent_T_H_W, "selective", memory_mode, block_weight_bytes=block_weight_bytes,
                    kept_blocks=k)  # fmt: skip
        if not p.fits(gpu_memory_gib, host_memory_gib):
            break
        fitting = p
    return fitting


def plan(counts: NetCounts, latent_T_H_W: tuple[int, int, int], block_weight_bytes: int = 2,
         gpu_memory_gib: float | None = None, host_memory_gib: float | None = None) -> list[Prediction]:  # fmt: skip
    """Every memory mode x checkpointing mode, fastest first; for a given GPU also, per mode, selective
    checkpointing with the largest budget that fits it when keeping every block's output does not."""
    rows = [predict(counts, latent_T_H_W, c, m, block_weight_bytes=block_weight_bytes)
            for m in MEMORY_MODES for c in CHECKPOINTING]  # fmt: skip
    if gpu_memory_gib is not None:
        for p in [p for p in rows if p.checkpointing == "selective" and not p.fits(gpu_memory_gib, host_memory_gib)]:
            partial = partial_selective(counts, latent_T_H_W, p.memory_mode, gpu_memory_gib, host_memory_gib,
                                        block_weight_bytes)  # fmt: skip
            rows += [partial] if partial is not None else []
    return sorted(rows, key=lambda p: p.s_per_step)


def choose(rows: list[Prediction], gpu_memory_gib: float, host_memory_gib: float | None = None) -> Prediction | None:
    """The fastest plan that fits (None: nothing does)."""
    fitting = [p for p in rows if p.fits(gpu_memory_gib, host_memory_gib)]
    return min(fitting, key=lambda p: p.s_per_step) if fitting else None


# --- the experiment ----------------------------------------------------------------------------------------------


def latent_shape_of(cfg) -> tuple[int, int, int] | None:
    """Latent (T, H, W) of the training clips of a composed config: 4k+1 frames -> k+1 latent frames, 8x spatial.
    None for a dataset that does not say (e.g. cached latents of any size)."""
    try:
        dataset = cfg.dataloader_train.dataset
        h, w = (int(v) for v in dataset.video_size)
        return 1 + (int(dataset.num_frames) - 1) // 4, h // 8, w // 8
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def gpu_memory_gib(device: torch.device | str | None = None) -> float | None:
    """Total memory of the (current) CUDA GPU, None without one."""
    if not torch.cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        return None
    return torch.cuda.get_device_properties(device).total_memory / GIB


def host_memory_gib() -> float | None:
    """This machine's memory (where the pinned buffers of the offload and streaming modes live)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError, AttributeError):
        return None


def format_plan(rows: list[Prediction], gpu_memory_gib: float | None, chosen: Prediction | None,
                host_memory_gib: float | None = None) -> str:  # fmt: skip
    where = f"a {gpu_memory_gib:.0f} GiB GPU" if gpu_memory_gib else "no GPU given (--gpu_memory_gib)"
    where += f" and {host_memory_gib:.0f} GiB of host memory" if host_memory_gib else ""
    lines = [f"Memory plan (predicted, docs/memory.md; s/step on one H200) for {where}:",
             f"  {'memory_mode':<20} {'checkpointing':<13} {'peak GiB':>9} {'s/step':>8} {'host GiB':>9} fits"]
    for p in rows:
        fits = "-" if gpu_memory_gib is None else ("yes" if p.fits(gpu_memory_gib, host_memory_gib) else "no")
        lines.append(f"  {p.memory_mode:<20} {p.label:<13} {p.peak_gib:>9.1f} {p.s_per_step:>8.2f} "
                     f"{p.host_gib:>9.1f} {fits}")  # fmt: skip
    if any(p.kept_blocks is not None for p in rows):
        lines.append("  (selective K: only the first K blocks keep their self-attention output, "
                     "model.config.selective_checkpoint_budget_gib)")  # fmt: skip
    if gpu_memory_gib is not None:
        lines.append(f"Fastest mode that fits: {chosen.overrides()}" if chosen is not None
                     else "Fastest mode that fits: none (no memory mode fits this GPU)")  # fmt: skip
    return "\n".join(lines)


__all__ = ["MEASURED", "MEASURED_FP32_ADAPTERS", "NetCounts", "Prediction", "choose", "format_plan", "gpu_memory_gib",
           "host_memory_gib", "latent_shape_of", "partial_selective", "plan", "predict", "predict_peak_gib",
           "predict_seconds"]
