"""The Video2World generation pipeline (docs/reference.md §2): text -> T5 embedding, conditioning frames -> VAE latents,
the reference sampler with guidance in x0 space over the DiT, VAE decode."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cosmos_predict2.diffusion.rectified_flow import Video2WorldCondition, conditioning_mask, denoise
from cosmos_predict2.diffusion.sampler import DEFAULT_GUIDANCE, DEFAULT_NUM_STEPS, RectifiedFlowAB2Sampler, guided_x0_fn
from cosmos_predict2.inference.conditioning import (
    build_input_video,
    load_conditioning_frames,
    num_conditional_latent_frames,
)

EMPTY_NEGATIVE_PROMPT_NOTE = (
    "the negative prompt is empty: the unconditional branch uses the all-zero text embedding (the 'no text' "
    "condition the model learned from text dropout in training), so guidance pushes away from an unprompted "
    "generation instead of being silently disabled as in the reference. Pass --guidance 0 to turn guidance off."
)


class Deferred:
    """A component the pipeline loads on first use (`Deferred(load_fn)`), so the CLI can hand over the DiT, the
    VAE and T5 before loading any of them and the pipeline decides when each is resident."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self.load = load


def _resolve(component: Any) -> Any:
    return component.load() if isinstance(component, Deferred) else component


@dataclass
class GenerationTimings:
    text_s: float = 0.0
    encode_s: float = 0.0
    sample_s: float = 0.0
    decode_s: float = 0.0
    net_forwards: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.text_s + self.encode_s + self.sample_s + self.decode_s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Video2WorldPipeline:
    """Generate a video from a conditioning image/video and a prompt.

    net: the DiT (any dtype; bf16 on GPU) on `device`, or `Deferred(load)`.
    tokenizer: a WanVAETokenizer (encode uint8 video -> normalised latents, decode -> [-1, 1]), or `Deferred(load)`.
    text_encoder: a T5TextEncoder, `Deferred(load)`, or None when only precomputed embeddings are used. It is
        loaded when prompts are encoded and freed afterwards (`keep_text_encoder=False`), so T5 and the DiT are
        never resident together unless asked: call `encode_prompts` for every prompt before the first generation.
    offload_tokenizer: keep the VAE on the CPU except while it encodes/decodes (saves its memory during sampling).
    batched_guidance: run both guidance branches as one batch of 2 (faster); False halves activation memory. A
        batched call that runs out of GPU memory falls back to False for the rest of the pipeline's life.
    share_guidance_input: in a batched guidance call, compute the network's text-independent first layers once
        for both branches (same result, ~1.6% less work at 720p); False runs the plain batch of 2.
    guidance_parallel: this process computes one guidance branch and exchanges it with its partner process
        (`parallel.guidance_parallel`).
    """

    def __init__(
        self,
        net: nn.Module | Deferred,
        tokenizer,
        text_encoder=None,
        device: torch.device | str | None = None,
        offload_tokenizer: bool = False,
        batched_guidance: bool = True,
        share_guidance_input: bool = True,
        keep_text_encoder: bool = True,
        log: Callable[[str], None] = print,
        guidance_parallel=None,
    ) -> None:
        self._net, self._tokenizer, self.text_encoder = net, tokenizer, text_encoder
        if device is None and isinstance(net, Deferred):
            raise ValueError("Video2WorldPipeline: pass device= with a deferred network")
        self.device = torch.device(device) if device is not None else next(net.parameters()).device
        self.offload_tokenizer = offload_tokenizer
        self.batched_guidance = batched_guidance
        self.share_guidance_input = share_guidance_input
        self.keep_text_encoder = keep_text_encoder
        self.guidance_parallel = guidance_parallel  # parallel/guidance_parallel.GuidanceParallel, or None
        self.log = log
        self._embedding_cache: dict[str, torch.Tensor] = {}
        if offload_tokenizer and not isinstance(tokenizer, Deferred):
            tokenizer.vae.to("cpu")

    def _run_guidance_branches_one_at_a_time(self) -> None:
        """The batched guidance call did not fit: later calls (and generations) run the branches in turn."""
        self.batched_guidance = False
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.log("both guidance branches in one batch did not fit in GPU memory: running them one after the other "
                 "(the same video, about half the activation memory; --sequential_guidance starts that way)")

    @property
    def net(self) -> nn.Module:
        self._net = _resolve(self._net)
        return self._net

    @property
    def tokenizer(self):
        if isinstance(self._tokenizer, Deferred):
            self._tokenizer = _resolve(self._tokenizer)
            if self.offload_tokenizer:
                self._tokenizer.vae.to("cpu")
        return self._tokenizer

    # --- text --------------------------------------------------------------------------------------------

    def encode_prompts(self, prompts: list[str]) -> float:
        """Encode (and cache, on the CPU) every prompt not yet cached, loading T5 for it and freeing it after
        unless keep_text_encoder. Returns the seconds spent."""
        t0 = time.perf_counter()
        todo = [p for p in dict.fromkeys(prompts) if p not in self._embedding_cache]
        if todo:
            if self.text_encoder is None:
                raise ValueError(
                    "no text encoder is loaded: pass --t5_path (or precomputed embeddings via --prompt_embedding)"
                )
            self.text_encoder = _resolve(self.text_encoder)
            for prompt in todo:
                emb_1_L_D, _ = self.text_encoder.encode([prompt])
                self._embedding_cache[prompt] = emb_1_L_D.float().cpu()
            if not self.keep_text_encoder:
                self.text_encoder = None
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        return time.perf_counter() - t0

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """emb_1_512_D (float32, on device); cached per prompt so the negative prompt is encoded once."""
        self.encode_prompts([prompt])
        return self._embedding_cache[prompt].to(self.device)

    def negative_embedding(self, negative_prompt: str | None, like_1_L_D: torch.Tensor) -> torch.Tensor:
        """The one rule for an empty negative prompt: the zero text embedding (with a note)."""
        if negative_prompt is None or not negative_prompt.strip():
            self.log(f"note: {EMPTY_NEGATIVE_PROMPT_NOTE}")
            return torch.zeros_like(like_1_L_D)
        return self.encode_prompt(negative_prompt)

    def _check_text_width(self, emb_1_L_D: torch.Tensor) -> None:
        k_proj = self.net.blocks[0].cross_attn.k_proj
        width = getattr(getattr(k_proj, "base_layer", k_proj), "in_features", None)  # PEFT wraps adapted layers
        if width is not None and emb_1_L_D.shape[-1] != width:
            raise ValueError(
                f"text embeddings are {emb_1_L_D.shape[-1]}-wide but the DiT expects {width} (T5-11B gives 1024): "
                "check --t5_path / --prompt_embedding against --model_size"
            )

    # --- VAE ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _vae_on_device(self) -> Iterator[None]:
        if self.offload_tokenizer:
            self.tokenizer.vae.to(self.tokenizer.device)
        try:
            yield
        finally:
            if self.offload_tokenizer:
                self.tokenizer.vae.to("cpu")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    # --- generation --------------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        input_path: str,
        size_hw: tuple[int, int],
        num_frames: int,
        prompt: str | None = None,
        prompt_embedding_1_L_D: torch.Tensor | None = None,
        negative_prompt: str | None = None,
        negative_embedding_1_L_D: torch.Tensor | None = None,
        num_conditional_frames: int = 1,
        guidance: float = DEFAULT_GUIDANCE,
        seed: int = 0,
        num_steps: int = DEFAULT_NUM_STEPS,
        timings: GenerationTimings | None = None,
    ) -> torch.Tensor:
        """Returns the generated video_3_T_H_W in [-1, 1] (float32, CPU). T = num_frames, (H, W) = size_hw."""
        timings = timings if timings is not None else GenerationTimings()
        t0 = time.perf_counter()
        cond_emb = prompt_embedding_1_L_D.float().to(self.device) if prompt_embedding_1_L_D is not None else \
            self.encode_prompt(prompt or "")
        uncond_emb = None
        if guidance != 0:
            uncond_emb = negative_embedding_1_L_D.float().to(self.device) if negative_embedding_1_L_D is not None \
                else self.negative_embedding(negative_prompt, cond_emb)
        timings.text_s += time.perf_counter() - t0
        for emb in (cond_emb, uncond_emb):
            if emb is not None:
                self._check_text_width(emb)

        t0 = time.perf_counter()
        frames_3_n_H_W, is_image = load_conditioning_frames(input_path, num_conditional_frames, size_hw)
        video_1_3_T_H_W = build_input_video(frames_3_n_H_W, num_frames, is_image)
        with self._vae_on_device():
            gt_1_C_T_H_W = self.tokenizer.encode(video_1_3_T_H_W).float().to(self.device)
        _sync(self.device)
        timings.encode_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        n_latent = num_conditional_latent_frames(frames_3_n_H_W.shape[1])
        samples = self.sample_latents(gt_1_C_T_H_W, n_latent, cond_emb, uncond_emb, guidance, seed, num_steps, timings)
        _sync(self.device)
        timings.sample_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        with self._vae_on_device():
            video_1_3_T_H_W = self.tokenizer.decode(samples)
        _sync(self.device)
        timings.decode_s = time.perf_counter() - t0
        video_3_T_H_W = video_1_3_T_H_W[0].float().cpu()
        if tuple(video_3_T_H_W.shape[1:]) != (num_frames, *size_hw):
            shape = list(video_3_T_H_W.shape)
            raise RuntimeError(f"decoded video has shape {shape}, expected {num_frames} frames of {size_hw}")
        return video_3_T_H_W

    def sample_latents(
        self,
        gt_1_C_T_H_W: torch.Tensor,
        num_conditional_latent_frames: int,
        cond_emb_1_L_D: torch.Tensor,
        uncond_emb_1_L_D: torch.Tensor | None,
        guidance: float,
        seed: int,
        num_steps: int,
        timings: GenerationTimings | None = None,
    ) -> torch.Tensor:
        """The DiT sampling loop: the part that dominates run time (and what the benchmark measures)."""
        shape = tuple(gt_1_C_T_H_W.shape)
        H, W = shape[-2:]
        mask_1_1_T_H_W = conditioning_mask(torch.tensor([num_conditional_latent_frames], device=self.device), shape)
        sampler = RectifiedFlowAB2Sampler(num_steps=num_steps)
        counter = {"forwards": 0}

        def denoise_fn(x_B: torch.Tensor, sigma_B: torch.Tensor, emb_kB_L_D: torch.Tensor) -> torch.Tensor:
            # k text embeddings per sample (k = 2 for a batched guidance call): tile the inputs k times and let
            # the network compute its text-independent first layers once per sample.
            k = emb_kB_L_D.shape[0] // x_B.shape[0]
            x_kB, sigma_kB = x_B.repeat(k, 1, 1, 1, 1), sigma_B.repeat(k)
            kB = x_kB.shape[0]
            counter["forwards"] += kB
            # Pixel-space padding mask, all zeros (no padding), as in training (docs/reference.md §5).
            padding_kB_1_H_W = x_kB.new_zeros(kB, 1, H * 8, W * 8)
            condition = Video2WorldCondition(
                emb_kB_L_D,
                gt_1_C_T_H_W.expand(kB, *shape[1:]),
                mask_1_1_T_H_W.expand(kB, *mask_1_1_T_H_W.shape[1:]),
                padding_mask=padding_kB_1_H_W,
            )
            repeats = k if self.share_guidance_input else 1
            x0_kB, _ = denoise(self.net, x_kB, sigma_kB.float(), condition, shared_input_repeats=repeats)
            return x0_kB

        x0_fn = guided_x0_fn(denoise_fn, cond_emb_1_L_D, uncond_emb_1_L_D, guidance, batched=self.batched_guidance,
                             branch_parallel=self.guidance_parallel,
                             on_batched_out_of_memory=self._run_guidance_branches_one_at_a_time)
        noise = sampler.initial_noise(shape, seed).to(self.device)
        samples = sampler.sample(x0_fn, noise)
        if timings is not None:
            timings.net_forwards = counter["forwards"]
        return samples
