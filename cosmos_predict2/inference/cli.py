"""Command line shared by examples/video2world.py and examples/video2world_lora.py (docs/reference.md §9 flags)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from cosmos_predict2.diffusion.sampler import DEFAULT_GUIDANCE, DEFAULT_NUM_STEPS
from cosmos_predict2.inference.conditioning import InferenceInputError, load_conditioning_frames, save_video
from cosmos_predict2.inference.defaults import (
    ASPECT_RATIOS,
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_T5_PATH,
    FRAMES_PER_FPS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    check_num_frames,
    default_dit_path,
    default_num_frames,
    default_tokenizer_path,
    parse_size,
    video_size_hw,
)
from cosmos_predict2.inference.model_loading import (
    LoadedNet,
    LoraFlags,
    check_load_ema,
    check_multi_lora_base,
    load_base_net,
    load_lora_net,
    load_multi_lora_net,
    parse_lora_paths,
)
from cosmos_predict2.inference.pipeline import Deferred, GenerationTimings, Video2WorldPipeline
from cosmos_predict2.inference.safety import SafetyModels, check_safety_models, refined_prompt_path
from cosmos_predict2.networks import attention_backend_for
from cosmos_predict2.parallel import (
    ProcessInfo,
    init_distributed,
    parallelize_net,
    resolve_device,
    shutdown_distributed,
)

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
    _add_ema_flags(p, lora)
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
    p.add_argument("--guidance_parallel", action="store_true",
                   help="the two guidance branches on the two halves of the --num_gpus GPUs, each half context "
                        "parallel (needs an even --num_gpus and guidance)")
    p.add_argument("--disable_guardrail", action="store_true",
                   help="skip the guardrail (cosmos-guardrail: prompt checks, video check and face blur)")
    p.add_argument("--offload_guardrail", action="store_true", help="keep the guardrail models on the CPU between uses")
    p.add_argument("--disable_prompt_refiner", action="store_true",
                   help="skip the prompt refiner (Cosmos-Reason1-7B rewriting each prompt from its input frames)")
    p.add_argument("--offload_prompt_refiner", action="store_true",
                   help="keep the prompt refiner on the CPU except while it runs")
    p.add_argument("--offload_text_encoder", action="store_true", help="keep T5 on the CPU between uses")
    p.add_argument("--downcast_text_encoder", action="store_true", help="run T5 in bf16 (half its memory)")
    p.add_argument("--offload_tokenizer", action="store_true", help="keep the VAE on the CPU while sampling")
    p.add_argument("--sequential_guidance", action="store_true",
                   help="run the two guidance branches one after the other (less memory, slower)")
    p.add_argument("--natten", action="store_true",
                   help="the sparse-attention variant (720p only): neighborhood attention in most self-attention "
                        "layers, default checkpoint model-720p-<fps>fps-natten.pt")
    p.add_argument("--benchmark", action="store_true", help="warm up once, then time a generation")
    p.add_argument("--num_frames", type=int, default=None, help="override the frame count (4k+1; tests, demos)")
    p.add_argument("--size", default=None, help="override the video size as WxH, multiples of 16 (tests, demos)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    if lora:
        _add_lora_flags(p)
    return p


def _add_ema_flags(p: argparse.ArgumentParser, lora: bool) -> None:
    ema = p.add_mutually_exclusive_group()
    if lora:
        ema_help = ("generate with the EMA weights: the EMA adapters of our adapter checkpoints, the net_ema.* weights "
                    "of reference LoRA checkpoints and of base/full fine-tuning checkpoints (an error if the file "
                    "has none). Default: our adapter checkpoints use their EMA adapters when they have them (what "
                    "this toolkit has always done; the reference LoRA script has no such flag), every other "
                    "checkpoint its net.* weights, as the reference does without --load_ema")
    else:
        ema_help = ("generate with the checkpoint's EMA weights (net_ema.*) instead of net.* (an error if it has "
                    "none). Off by default, as in the reference: the released base checkpoints' net.* weights are "
                    "what they ship; a full fine-tuning checkpoint (model/iter_*.pt) holds both")
    ema.add_argument("--load_ema", dest="load_ema", action="store_const", const=True, default=None, help=ema_help)
    ema.add_argument("--no_load_ema", dest="load_ema", action="store_const", const=False,
                     help="generate with the trained (non-EMA) weights" + (", also for our adapter checkpoints"
                                                                          if lora else " (the default)"))


def _add_lora_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--use_lora", action="store_true", help="--dit_path is a LoRA checkpoint")
    p.add_argument("--lora_rank", type=int, default=None, help="optional: must equal the checkpoint's rank")
    p.add_argument("--lora_alpha", type=_number, default=None,
                   help="optional for our checkpoints (must match); required for reference LoRA checkpoints")
    p.add_argument("--lora_target_modules", default=None, help="optional: must equal the checkpoint's targets")
    p.add_argument("--lora_scale", type=float, action="append", default=None,
                   help="adapter strength (0 = the base model exactly); with several --lora_path, one per adapter")
    p.add_argument("--lora_path", action="append", default=None, metavar="ADAPTER[:SCALE]",
                   help="an adapter in any format (ours, diffusers, ComfyUI, kohya, PEFT), repeatable: several "
                        "adapters act at once; --dit_path (optional) is then the base DiT")
    p.add_argument("--no_merge_lora", action="store_true",
                   help="keep the adapters as separate fp32 layers instead of folding them into the base weights "
                        "(slower; the default merge runs at the base model's speed)")
    p.add_argument("--base_dit_path", default=None,
                   help="base DiT for an adapter checkpoint (default: the path recorded in it)")
    p.add_argument("--allow_base_mismatch", action="store_true",
                   help="generate even when the base DiT is not the file the adapter was trained on (its size "
                        "or sha256 differs from the ones recorded in the adapter)")


@dataclass
class Job:
    input_path: str
    prompt: str
    output_path: str
    original_prompt: str | None = None  # set when `prompt` is the prompt refiner's rewrite of it


@dataclass
class Request:
    """Everything a run needs, checked before any model is loaded."""

    jobs: list[Job]
    size_hw: tuple[int, int]
    num_frames: int
    model_size: str
    use_lora: bool
    prompt_embedding: torch.Tensor | None
    negative_embedding: torch.Tensor | None


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


def check_input_path(path: str, flag: str) -> None:
    p = Path(path)
    if p.suffix.lower() not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
        raise InferenceInputError(
            f"{flag} {p}: unsupported input type {p.suffix or '(no extension)'!r}; use an image "
            f"({', '.join(IMAGE_EXTENSIONS)}) or a video ({', '.join(VIDEO_EXTENSIONS)})"
        )
    if not p.is_file():
        raise InferenceInputError(f"{flag} {p}: file not found")


def check_output_path(path: str, flag: str) -> None:
    """An .mp4 path whose folder exists or can be made, checked before a generation that it would lose."""
    p = Path(path)
    if p.suffix.lower() != ".mp4":
        raise InferenceInputError(f"{flag} {p}: the output is an H.264 video, name it with the .mp4 extension")
    if p.is_dir():
        raise InferenceInputError(f"{flag} {p}: is a folder; give a file name such as {p / 'video.mp4'}")
    existing = next(q for q in [p.parent, *p.parent.parents] if q.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise InferenceInputError(f"{flag} {p}: cannot write under {existing}; choose another folder")


def _check_file(path: str | None, flag: str) -> None:
    if path and not Path(path).exists():
        raise InferenceInputError(f"{flag} {path}: not found" + _other_checkpoints(Path(path)))


LIST_AT_MOST = 8  # checkpoints named in a "not found" message (the latest ones)


def _iteration_files(folder: Path) -> list[Path]:
    files = [p for p in folder.glob("iter_*.pt") if p.stem[len("iter_"):].isdigit() and p.is_file()]
    return sorted(files, key=lambda p: int(p.stem[len("iter_"):]))


def _other_checkpoints(path: Path) -> str:
    """For a missing model/iter_*.pt: the iter_*.pt files that its folder does hold, and the one that
    ../latest_checkpoint.txt (written by training after each complete save) names."""
    if not (path.name.startswith("iter_") and path.suffix == ".pt"):
        return ""
    folder = path.parent
    if not folder.is_dir():
        return f"; the folder {folder} does not exist either (training writes JOB/checkpoints/model/iter_*.pt)"
    found = _iteration_files(folder)
    if not found:
        text = f"; {folder} holds no iter_*.pt checkpoints"
    else:
        shown = [p.name for p in found[-LIST_AT_MOST:]]
        more = f"{len(found) - len(shown)} older and " if len(found) > len(shown) else ""
        text = f"; {folder} holds {more}{', '.join(shown)}"
    latest_file = folder.parent / "latest_checkpoint.txt"
    if latest_file.is_file():
        try:
            latest = latest_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            latest = ""
        if latest and (folder / latest).is_file():
            text += f"; the latest (per {latest_file}) is {folder / latest}"
        elif latest:
            text += f"; {latest_file} names {latest}, which is not in {folder}"
    return text


def check_request(args: argparse.Namespace, lora: bool) -> Request:
    """Every flag and path, before any model is loaded: a typo must not cost a model load or a generation."""
    lora_paths = getattr(args, "lora_path", None)
    use_lora = lora and (args.use_lora or bool(lora_paths))
    if lora and len(args.lora_scale or []) > 1 and not lora_paths:
        raise InferenceInputError("several --lora_scale need as many --lora_path (one adapter each)")
    if lora_paths:
        if args.dit_path and args.base_dit_path:
            raise InferenceInputError("with --lora_path, give the base DiT as --dit_path or --base_dit_path, not both")
        for path, _ in parse_lora_paths(lora_paths, args.lora_scale):
            _check_file(path, "--lora_path")
        check_multi_lora_base(args.dit_path or args.base_dit_path)
    for flag in ("lora_rank", "lora_alpha", "lora_target_modules", "base_dit_path"):
        if not use_lora and getattr(args, flag, None) is not None:
            raise InferenceInputError(f"--{flag} only applies with --use_lora")
    check_safety_models(args.disable_guardrail, args.disable_prompt_refiner, bool(args.prompt_embedding))
    if args.num_steps < 1:
        raise InferenceInputError(f"--num_steps must be at least 1, got {args.num_steps}")
    if args.natten:
        _check_natten(args)
    if args.guidance_parallel and (args.num_gpus < 2 or args.num_gpus % 2 or args.guidance == 0):
        raise InferenceInputError("--guidance_parallel needs an even --num_gpus (2, 4, 8) and a nonzero --guidance, "
                                  f"got --num_gpus {args.num_gpus} --guidance {args.guidance}")
    size_hw = parse_size(args.size) if args.size else video_size_hw(args.resolution, args.aspect_ratio)
    num_frames = args.num_frames or default_num_frames(args.fps)
    check_num_frames(num_frames, args.num_conditional_frames)
    if args.model_size == "tiny" and not (args.dit_path and args.tokenizer_path and args.size):
        raise InferenceInputError("--model_size tiny needs --dit_path, --tokenizer_path and --size")
    if args.batch_input_json and args.prompt_embedding:
        raise InferenceInputError("--prompt_embedding applies to a single --prompt, not to --batch_input_json")
    if use_lora and not args.dit_path and not lora_paths:
        raise InferenceInputError("--use_lora needs --dit_path: the LoRA checkpoint (model/iter_XXXXXXXXX.pt)")
    jobs = _jobs(args)
    flag = "--batch_input_json entry" if args.batch_input_json else None
    for job in jobs:
        check_input_path(job.input_path, flag or "--input_path")
        check_output_path(job.output_path, flag or "--save_path")
    for path, name in ((args.dit_path, "--dit_path"), (args.tokenizer_path, "--tokenizer_path"),
                       (getattr(args, "base_dit_path", None), "--base_dit_path")):  # fmt: skip
        _check_file(path, name)
    if args.load_ema and args.dit_path:
        check_load_ema(args.dit_path, use_lora and not lora_paths)
    return Request(jobs, size_hw, num_frames, args.model_size or "2B", use_lora,
                   _load_embedding(args.prompt_embedding) if args.prompt_embedding else None,
                   _load_embedding(args.negative_prompt_embedding) if args.negative_prompt_embedding else None)


def _check_natten(args: argparse.Namespace) -> None:
    from cosmos_predict2.networks.neighborhood import NATTEN_PARAMETERS

    if args.model_size not in (None, *NATTEN_PARAMETERS):
        raise InferenceInputError(f"--natten: there is no sparse-attention variant of the {args.model_size} model "
                                  f"(only {', '.join(NATTEN_PARAMETERS)})")
    if args.resolution != "720" and not args.size:
        raise InferenceInputError("--natten: the sparse-attention variants are 720p models; use --resolution 720")


def _load_embedding(path: str) -> torch.Tensor:
    from cosmos_predict2.text import load_padded_embedding

    emb_L_D, _ = load_padded_embedding(path)
    return emb_L_D[None]


def _process(args: argparse.Namespace) -> ProcessInfo:
    if args.num_gpus <= 1:
        return ProcessInfo(device=resolve_device(args.device))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != args.num_gpus:
        raise RuntimeError(
            f"--num_gpus {args.num_gpus} but WORLD_SIZE={world}: launch with torchrun --nproc_per_node={args.num_gpus}"
        )
    return init_distributed(args.device)


def _load_net(args: argparse.Namespace, request: Request, device: torch.device, log) -> torch.nn.Module:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # the DiT runs in bf16 on GPU
    if request.use_lora:
        flags = LoraFlags(args.lora_rank, args.lora_alpha, args.lora_target_modules, (args.lora_scale or [1.0])[0],
                          args.base_dit_path, merge=not args.no_merge_lora,
                          allow_base_mismatch=args.allow_base_mismatch, load_ema=args.load_ema)  # fmt: skip
        if args.lora_path:
            pairs = parse_lora_paths(args.lora_path, args.lora_scale)
            loaded: LoadedNet = load_multi_lora_net(pairs, args.dit_path or args.base_dit_path, args.model_size,
                                                    device, dtype, flags)  # fmt: skip
        else:
            loaded = load_lora_net(args.dit_path, args.model_size, device, dtype, flags)
    else:
        dit_path = args.dit_path or default_dit_path(request.model_size, args.resolution, args.fps, args.natten)
        loaded = load_base_net(dit_path, request.model_size, device, dtype, load_ema=bool(args.load_ema))
    log(f"loaded {loaded.description}")
    if args.natten:
        from cosmos_predict2.networks.neighborhood import apply_neighborhood_attention, natten_parameters_for

        apply_neighborhood_attention(loaded.net, natten_parameters_for(request.model_size))
        log("sparse attention: neighborhood attention in the NATTEN variant's self-attention layers")
    context_parallel_size = args.num_gpus // 2 if args.guidance_parallel else args.num_gpus
    if context_parallel_size > 1:
        loaded.net = parallelize_net(loaded.net, fsdp_shard_size=1, context_parallel_size=context_parallel_size)
    return loaded.net


def _guidance_parallel(args: argparse.Namespace):
    if not args.guidance_parallel:
        return None
    import torch.distributed as dist

    from cosmos_predict2.parallel.guidance_parallel import guidance_parallel

    return guidance_parallel(dist.get_world_size(), dist.get_rank())


def build_pipeline(args: argparse.Namespace, request: Request, device: torch.device, log) -> Video2WorldPipeline:
    """The pipeline with its three models deferred: T5 runs (and is freed) before the DiT and VAE are loaded."""
    from cosmos_predict2.text import T5TextEncoder
    from cosmos_predict2.tokenizers import WanVAETokenizer

    t5_dtype = torch.bfloat16 if args.downcast_text_encoder else torch.float32
    tokenizer_path = args.tokenizer_path or default_tokenizer_path(request.model_size)
    return Video2WorldPipeline(
        net=Deferred(lambda: _load_net(args, request, device, log)),
        tokenizer=Deferred(lambda: WanVAETokenizer.from_pretrained(tokenizer_path, device=device)),
        text_encoder=Deferred(lambda: T5TextEncoder(args.t5_path, dtype=t5_dtype, device=device,
                                                    offload_after_use=args.offload_text_encoder)),
        device=device, offload_tokenizer=args.offload_tokenizer, batched_guidance=not args.sequential_guidance,
        keep_text_encoder=False, log=log, guidance_parallel=_guidance_parallel(args),
    )  # fmt: skip


def _texts_to_encode(args: argparse.Namespace, request: Request) -> list[str]:
    prompts = [] if request.prompt_embedding is not None else [job.prompt for job in request.jobs]
    if args.guidance != 0 and request.negative_embedding is None and args.negative_prompt.strip():
        prompts.append(args.negative_prompt)
    return prompts


def main(argv: Sequence[str] | None = None, lora: bool = False) -> list[Path]:
    """Parse -> check every input -> build the pipeline -> generate each job -> save (rank 0). Returns the written
    video paths; raises on bad input (see `run`)."""
    args = build_parser(lora).parse_args(argv)
    log = print
    request = check_request(args, lora)
    proc = _process(args)
    written = _generate(args, request, proc, log)
    shutdown_distributed(proc)  # finished: every rank got here
    return written


def _generate(args: argparse.Namespace, request: Request, proc: ProcessInfo, log) -> list[Path]:
    safety = _screen_prompts(args, request, proc, log)  # guardrail / prompt refiner: every prompt before the DiT
    if not request.jobs:
        return []
    pipe = build_pipeline(args, request, proc.device, log)
    text_s = pipe.encode_prompts(_texts_to_encode(args, request))  # T5 loaded, used and freed here
    written: list[Path] = []
    for i, job in enumerate(request.jobs):
        kwargs = dict(
            input_path=job.input_path, size_hw=request.size_hw, num_frames=request.num_frames, prompt=job.prompt,
            prompt_embedding_1_L_D=request.prompt_embedding, negative_prompt=args.negative_prompt,
            negative_embedding_1_L_D=request.negative_embedding, num_conditional_frames=args.num_conditional_frames,
            guidance=args.guidance, seed=args.seed, num_steps=args.num_steps,
        )  # fmt: skip
        if args.benchmark and i == 0:
            _warm_up(pipe, kwargs, proc.device, log)
        timings = GenerationTimings(text_s=text_s if i == 0 else 0.0)
        video_3_T_H_W = pipe.generate(**kwargs, timings=timings)
        if proc.is_main and (video_3_T_H_W := safety.finish_video(video_3_T_H_W, job.output_path)) is not None:
            written.append(_save(job, video_3_T_H_W, args.fps))
            log(f"saved {written[-1]} ({request.num_frames} frames, {request.size_hw[1]}x{request.size_hw[0]}, "
                f"{args.fps} fps); sampling {timings.sample_s:.2f} s, {timings.net_forwards} net forwards")
        if args.benchmark and i == 0:
            _report_benchmark(timings, args.num_steps, proc.device, log, pipe.net)
    return written


def _screen_prompts(args: argparse.Namespace, request: Request, proc: ProcessInfo, log) -> SafetyModels:
    """Text guardrail -> prompt refiner -> text guardrail on every job (rank 0), before the DiT is loaded; the
    refused jobs leave request.jobs. Returns the models for the video guardrail."""
    safety = SafetyModels.from_flags(args.disable_guardrail, args.offload_guardrail, args.disable_prompt_refiner,
                                     args.offload_prompt_refiner, proc.device, log)  # fmt: skip

    def frames_for(job: Job) -> torch.Tensor:
        return load_conditioning_frames(job.input_path, args.num_conditional_frames, request.size_hw)[0]

    request.jobs = safety.screen(request.jobs, frames_for, is_main=proc.is_main)
    return safety


def _save(job: Job, video_3_T_H_W: torch.Tensor, fps: int) -> Path:
    path = save_video(job.output_path, video_3_T_H_W, fps=fps)
    if job.original_prompt is not None:
        refined_prompt_path(path).write_text(job.prompt + "\n", encoding="utf-8")
    return path


def _warm_up(pipe: Video2WorldPipeline, kwargs: dict, device: torch.device, log) -> None:
    log("benchmark: warm-up generation")
    pipe.generate(**kwargs)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _report_benchmark(timings: GenerationTimings, num_steps: int, device: torch.device, log,
                      net: torch.nn.Module) -> None:
    from cosmos_predict2.networks.neighborhood import neighborhood_kernels_run

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    log(f"benchmark: {timings.encode_s + timings.sample_s + timings.decode_s:.2f} s per video "
        f"(VAE encode {timings.encode_s:.2f}, DiT sampling {timings.sample_s:.2f} for {num_steps} "
        f"steps, VAE decode {timings.decode_s:.2f}), peak GPU memory {peak:.1f} GiB, attention "
        f"{attention_backend_for(device, dtype)}"
        + (f" (neighborhood layers: {kernels})" if (kernels := neighborhood_kernels_run(net)) else ""))


def run(lora: bool = False, argv: Sequence[str] | None = None) -> int:
    """Entry point: known input problems print one clear line instead of a traceback."""
    from cosmos_predict2.data.video import VideoReadError
    from cosmos_predict2.inference.safety import SafetyModelUnavailableError
    from cosmos_predict2.io import CheckpointFileError
    from cosmos_predict2.lora import LoraConfigError
    from cosmos_predict2.text import EmbeddingFileError

    known = (InferenceInputError, FileNotFoundError, CheckpointFileError, LoraConfigError, VideoReadError,
             EmbeddingFileError, SafetyModelUnavailableError, ValueError, RuntimeError)
    try:
        main(argv, lora=lora)
    except known as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
