"""Command line shared by examples/video2world.py and examples/video2world_lora.py (SPEC section 9 flags)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cosmos_predict2.diffusion.sampler import DEFAULT_GUIDANCE, DEFAULT_NUM_STEPS
from cosmos_predict2.inference.conditioning import InferenceInputError, save_video
from cosmos_predict2.inference.defaults import (
    ASPECT_RATIOS,
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_T5_PATH,
    FRAMES_PER_FPS,
    check_num_frames,
    default_dit_path,
    default_num_frames,
    default_tokenizer_path,
    parse_size,
    video_size_hw,
)
from cosmos_predict2.inference.model_loading import LoadedNet, LoraFlags, load_base_net, load_lora_net
from cosmos_predict2.inference.pipeline import EMPTY_NEGATIVE_PROMPT_NOTE, GenerationTimings, Video2WorldPipeline
from cosmos_predict2.inference.safety import check_safety_models
from cosmos_predict2.networks import attention_backend_for

MODEL_SIZE_CHOICES = ("2B", "14B", "tiny")  # tiny: the small test/demo network (needs --size and tiny T5/VAE)


def _number(text: str) -> int | float:
    """An int when the text is one (so messages say '16', not '16.0'), else a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def build_parser(lora: bool) -> argparse.ArgumentParser:
    script = "video2world_lora.py" if lora else "video2world.py"
    p = argparse.ArgumentParser(
        prog=f"examples/{script}",
        description="Cosmos-Predict2 Video2World generation" + (" with a LoRA adapter" if lora else ""),
    )
    p.add_argument("--model_size", choices=MODEL_SIZE_CHOICES, default=None,
                   help="2B or 14B (default 2B; for LoRA checkpoints the recorded size)")
    p.add_argument("--resolution", choices=("480", "720"), default="720")
    p.add_argument("--fps", type=int, choices=sorted(FRAMES_PER_FPS), default=16,
                   help="16 (93 frames) or 10 (61 frames); also the output mp4's frame rate")
    p.add_argument("--aspect_ratio", choices=ASPECT_RATIOS, default="16:9")
    p.add_argument("--dit_path", default=None,
                   help="DiT checkpoint (default checkpoints/nvidia/Cosmos-Predict2-<size>-Video2World/"
                        "model-<res>p-<fps>fps.pt)" + ("; with --use_lora a LoRA checkpoint" if lora else ""))
    p.add_argument("--tokenizer_path", default=None, help="VAE: tokenizer.pth or a diffusers AutoencoderKLWan folder")
    p.add_argument("--t5_path", default=DEFAULT_T5_PATH, help="T5 encoder folder (google-t5/t5-11b)")
    p.add_argument("--prompt", default="", help="text prompt")
    p.add_argument("--prompt_embedding", default=None,
                   help="precomputed prompt embedding (t5_xxl-style .pickle) instead of encoding --prompt")
    p.add_argument("--negative_prompt", default=DEFAULT_NEGATIVE_PROMPT,
                   help="negative prompt for the unconditional branch (default: NVIDIA's). An empty string uses "
                        "the zero text embedding; --guidance 0 disables guidance")
    p.add_argument("--negative_prompt_embedding", default=None, help="precomputed negative prompt embedding (.pickle)")
    p.add_argument("--input_path", default=None, help="conditioning image (.jpg/.jpeg/.png/.webp) or video (.mp4)")
    p.add_argument("--num_conditional_frames", type=int, choices=(1, 5), default=1,
                   help="for video input: condition on its last 1 or 5 frames")
    p.add_argument("--batch_input_json", default=None,
                   help="JSON list of {input_video, prompt, output_video} to generate in one run")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE, help="guidance scale in x0 space (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_steps", type=int, default=DEFAULT_NUM_STEPS, help="sampling steps")
    p.add_argument("--save_path", default="output/generated_video.mp4")
    p.add_argument("--num_gpus", type=int, default=1, help="context parallel over this many GPUs (use torchrun)")
    p.add_argument("--disable_guardrail", action="store_true")
    p.add_argument("--offload_guardrail", action="store_true")
    p.add_argument("--disable_prompt_refiner", action="store_true")
    p.add_argument("--offload_prompt_refiner", action="store_true")
    p.add_argument("--offload_text_encoder", action="store_true", help="keep T5 on the CPU between uses")
    p.add_argument("--downcast_text_encoder", action="store_true", help="run T5 in bf16 (half its memory)")
    p.add_argument("--offload_tokenizer", action="store_true", help="keep the VAE on the CPU while sampling")
    p.add_argument("--sequential_guidance", action="store_true",
                   help="run the two guidance branches one after the other (less memory, slower)")
    p.add_argument("--benchmark", action="store_true", help="warm up once, then time a generation")
    p.add_argument("--num_frames", type=int, default=None, help="override the frame count (4k+1; tests, demos)")
    p.add_argument("--size", default=None, help="override the video size as WxH, multiples of 16 (tests, demos)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    if lora:
        p.add_argument("--use_lora", action="store_true", help="--dit_path is a LoRA checkpoint")
        p.add_argument("--lora_rank", type=int, default=None, help="optional: must equal the checkpoint's rank")
        p.add_argument("--lora_alpha", type=_number, default=None,
                       help="optional for our checkpoints (must match); required for reference LoRA checkpoints")
        p.add_argument("--lora_target_modules", default=None, help="optional: must equal the checkpoint's targets")
        p.add_argument("--lora_scale", type=float, default=1.0, help="adapter strength (0 = the base model exactly)")
        p.add_argument("--no_merge_lora", action="store_true",
                       help="keep the adapters as separate fp32 layers instead of folding them into the base weights "
                            "(slower; the default merge runs at the base model's speed)")
        p.add_argument("--base_dit_path", default=None,
                       help="base DiT for an adapter checkpoint (default: the path recorded in it)")
    return p


@dataclass
class Job:
    input_path: str
    prompt: str
    output_path: str


def _jobs(args: argparse.Namespace) -> list[Job]:
    if args.batch_input_json:
        path = Path(args.batch_input_json)
        if not path.is_file():
            raise InferenceInputError(f"--batch_input_json {path}: file not found")
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InferenceInputError(f"--batch_input_json {path}: invalid JSON ({e})") from e
        if not isinstance(items, list) or not items:
            raise InferenceInputError(f"--batch_input_json {path}: expected a non-empty JSON list of objects")
        jobs = []
        for i, item in enumerate(items):
            keys = ("input_video", "prompt", "output_video")
            missing = [k for k in keys if not isinstance(item, dict) or k not in item]
            if missing:
                raise InferenceInputError(f"--batch_input_json {path}: entry {i} lacks {missing}")
            jobs.append(Job(str(item["input_video"]), str(item["prompt"]), str(item["output_video"])))
        return jobs
    if not args.input_path:
        raise InferenceInputError("--input_path is required (or --batch_input_json)")
    return [Job(args.input_path, args.prompt, args.save_path)]


def _setup_distributed(num_gpus: int, device: str | None = None):
    if num_gpus <= 1:
        return None
    try:
        from cosmos_predict2.parallel import init_distributed, parallelize_net  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            f"--num_gpus {num_gpus}: context-parallel inference needs cosmos_predict2.parallel (init_distributed, "
            f"parallelize_net), which is not available in this install ({e}); run with --num_gpus 1"
        ) from e
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != num_gpus:
        raise RuntimeError(
            f"--num_gpus {num_gpus} but WORLD_SIZE={world}: launch with torchrun --nproc_per_node={num_gpus}"
        )
    return init_distributed(device)


def _device(args: argparse.Namespace) -> torch.device:
    if args.device:
        return torch.device(args.device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _load_embedding(path: str) -> torch.Tensor:
    from cosmos_predict2.text import load_padded_embedding

    emb_L_D, _ = load_padded_embedding(path)
    return emb_L_D[None]


def _crossattn_width(net) -> int | None:
    """Width the DiT's cross-attention expects (the T5 width), read from the first block's k projection."""
    k_proj = net.blocks[0].cross_attn.k_proj
    base = getattr(k_proj, "base_layer", k_proj)  # PEFT wraps adapted layers
    return getattr(base, "in_features", None)


def main(argv: Sequence[str] | None = None, lora: bool = False) -> list[Path]:
    """Run generation; returns the written video paths (rank 0). Raises on bad input (see `run`)."""
    args = build_parser(lora).parse_args(argv)
    log = print
    use_lora = lora and args.use_lora
    if not lora or not use_lora:
        for flag in ("lora_rank", "lora_alpha", "lora_target_modules", "base_dit_path"):
            if getattr(args, flag, None) is not None:
                raise InferenceInputError(f"--{flag} only applies with --use_lora")

    # Cheap checks first: a wrong flag must not cost a model load.
    check_safety_models(args.disable_guardrail, args.disable_prompt_refiner)
    if args.num_steps < 1:
        raise InferenceInputError(f"--num_steps must be at least 1, got {args.num_steps}")
    size_hw = parse_size(args.size) if args.size else video_size_hw(args.resolution, args.aspect_ratio)
    num_frames = args.num_frames or default_num_frames(args.fps)
    check_num_frames(num_frames, args.num_conditional_frames)
    if args.model_size == "tiny" and not (args.dit_path and args.tokenizer_path and args.size):
        raise InferenceInputError("--model_size tiny needs --dit_path, --tokenizer_path and --size")
    jobs = _jobs(args)
    dist_info = _setup_distributed(args.num_gpus, args.device)
    rank = int(os.environ.get("RANK", "0"))

    device = _device(args)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # the DiT runs in bf16 on GPU
    model_size = args.model_size or "2B"

    # 1. Text: encode every prompt first, then free T5, so T5 and the DiT never occupy the GPU together.
    t0 = time.perf_counter()
    if args.batch_input_json and args.prompt_embedding:
        raise InferenceInputError("--prompt_embedding applies to a single --prompt, not to --batch_input_json")
    negative_emb = _load_embedding(args.negative_prompt_embedding) if args.negative_prompt_embedding else None
    need_negative_text = args.guidance != 0 and negative_emb is None and bool(args.negative_prompt.strip())
    need_prompt_text = args.prompt_embedding is None
    encoder = None
    if need_prompt_text or need_negative_text:
        from cosmos_predict2.text import T5TextEncoder

        encoder = T5TextEncoder(
            args.t5_path,
            dtype=torch.bfloat16 if args.downcast_text_encoder else torch.float32,
            device=device,
            offload_after_use=args.offload_text_encoder,
        )
    prompt_embs: list[torch.Tensor] = []
    for job in jobs:
        if args.prompt_embedding:
            prompt_embs.append(_load_embedding(args.prompt_embedding))
        else:
            prompt_embs.append(encoder.encode([job.prompt])[0].float().cpu())
    if need_negative_text:
        negative_emb = encoder.encode([args.negative_prompt])[0].float().cpu()
    del encoder
    if device.type == "cuda":
        torch.cuda.empty_cache()
    text_s = time.perf_counter() - t0

    # 2. Models.
    if use_lora:
        flags = LoraFlags(args.lora_rank, args.lora_alpha, args.lora_target_modules, args.lora_scale,
                          args.base_dit_path, merge=not args.no_merge_lora)
        if not args.dit_path:
            raise InferenceInputError("--use_lora needs --dit_path: the LoRA checkpoint (model/iter_XXXXXXXXX.pt)")
        loaded: LoadedNet = load_lora_net(args.dit_path, args.model_size, device, dtype, flags)
    else:
        dit_path = args.dit_path or default_dit_path(model_size, args.resolution, args.fps)
        loaded = load_base_net(dit_path, model_size, device, dtype)
    log(f"loaded {loaded.description}")
    net = loaded.net
    emb_dim = _crossattn_width(net)
    for emb in [*prompt_embs, *([negative_emb] if negative_emb is not None else [])]:
        if emb_dim is not None and emb.shape[-1] != emb_dim:
            raise InferenceInputError(
                f"text embeddings are {emb.shape[-1]}-wide but the DiT expects {emb_dim} (T5-11B gives 1024): "
                "check --t5_path / --prompt_embedding against --model_size"
            )
    if dist_info is not None:
        from cosmos_predict2.parallel import parallelize_net

        net = parallelize_net(net, fsdp_shard_size=1, context_parallel_size=args.num_gpus)

    from cosmos_predict2.tokenizers import WanVAETokenizer

    tokenizer_path = args.tokenizer_path or default_tokenizer_path(model_size)
    tokenizer = WanVAETokenizer.from_pretrained(tokenizer_path, device=device)
    pipe = Video2WorldPipeline(net, tokenizer, device=device, offload_tokenizer=args.offload_tokenizer,
                               batched_guidance=not args.sequential_guidance, log=log)
    if args.guidance != 0 and negative_emb is None:
        negative_emb = torch.zeros_like(prompt_embs[0])
        log(f"note: {EMPTY_NEGATIVE_PROMPT_NOTE}")

    # 3. Generate.
    written: list[Path] = []
    for i, (job, emb) in enumerate(zip(jobs, prompt_embs)):
        kwargs = dict(
            input_path=job.input_path, size_hw=size_hw, num_frames=num_frames, prompt_embedding_1_L_D=emb,
            negative_embedding_1_L_D=negative_emb, num_conditional_frames=args.num_conditional_frames,
            guidance=args.guidance, seed=args.seed, num_steps=args.num_steps,
        )
        if args.benchmark and i == 0:
            log("benchmark: warm-up generation")
            pipe.generate(**kwargs)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
        timings = GenerationTimings(text_s=text_s if i == 0 else 0.0)
        video_3_T_H_W = pipe.generate(**kwargs, timings=timings)
        if rank == 0:
            out = save_video(job.output_path, video_3_T_H_W, fps=args.fps)
            written.append(out)
            log(f"saved {out} ({num_frames} frames, {size_hw[1]}x{size_hw[0]}, {args.fps} fps); "
                f"sampling {timings.sample_s:.2f} s, {timings.net_forwards} net forwards")
        if args.benchmark and i == 0:
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            log(f"benchmark: {timings.encode_s + timings.sample_s + timings.decode_s:.2f} s per video "
                f"(VAE encode {timings.encode_s:.2f}, DiT sampling {timings.sample_s:.2f} for {args.num_steps} "
                f"steps, VAE decode {timings.decode_s:.2f}), peak GPU memory {peak:.1f} GiB, attention "
                f"{attention_backend_for(device, dtype)}")
    return written


def run(lora: bool = False, argv: Sequence[str] | None = None) -> int:
    """Entry point: known input problems print one clear line instead of a traceback."""
    from cosmos_predict2.data.video import VideoReadError
    from cosmos_predict2.inference.safety import SafetyModelUnavailableError
    from cosmos_predict2.lora import LoraConfigError
    from cosmos_predict2.networks import CheckpointMismatchError
    from cosmos_predict2.text import EmbeddingFileError

    known = (InferenceInputError, FileNotFoundError, CheckpointMismatchError, LoraConfigError, VideoReadError,
             EmbeddingFileError, SafetyModelUnavailableError, ValueError, RuntimeError)
    try:
        main(argv, lora=lora)
    except known as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
