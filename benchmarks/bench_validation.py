"""Cost of evaluation during training (issue 15) against training, at the guide's settings.

Random base weights of the real size, LoRA r16 (the guide's targets), batch 1 of latents at the resolution's shape.
Times, with the settings of `trainer.validation` (training/evaluation.ValidationSettings defaults):
  - one validation-loss pass: V clips x num_sigmas forwards of `Video2WorldModel.loss_at` (no gradients, EMA on);
  - one held-out generation: `Video2WorldPipeline.sample_latents` (num_steps, guidance: 2 forwards per step) from
    one conditioning latent frame; the VAE encode/decode around it is left out (the tiny random VAE stands in);
  - the training step (forward, backward, clip, AdamW, EMA), as benchmarks/bench_train_step.py.
and prints the evaluation cost per validation_iter iterations of training (generations amortised over
generate_every validations; the base model's one-off generation left out) as a fraction of that training time.

    python -m benchmarks.bench_validation --model_size 2B                 # CUDA, 720p; JSON to $OUT if set
    python -m benchmarks.bench_validation --model_size 2B --resolution 480p --num_clips 8
    python -m benchmarks.bench_validation --model_size tiny               # CPU smoke check of the script
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_train_step import LATENT_SHAPES, LORA_TARGETS, lora_train_step, make_batch, measure  # noqa: E402
from cosmos_predict2.configs.lazy import instantiate  # noqa: E402
from cosmos_predict2.training.evaluation import ValidationSettings, evaluation_weights, sigma_quantiles  # noqa: E402
from cosmos_predict2.training.model import Video2WorldModel, model_config_dict  # noqa: E402


def build_model(size: str, device: torch.device, dtype: str, ckpt: str, rank: int) -> Video2WorldModel:
    cfg = model_config_dict(model_size=size, dit_path="", train_architecture="lora", lora_rank=rank, lora_alpha=rank,
                            lora_target_modules=LORA_TARGETS, precision=dtype, activation_checkpointing=ckpt,
                            tokenizer_type="tiny_random", hash_base_checkpoint=False,
                            pipe_config={"ema": {"enabled": True}})  # fmt: skip
    model = instantiate({"_target_": f"{Video2WorldModel.__module__}.Video2WorldModel", "config": cfg})
    model.setup(device, seed=0)
    model.init_ema()
    return model


def time_train_step(model: Video2WorldModel, batch: dict, warmup: int, reps: int) -> float:
    return measure(lora_train_step(model, batch), warmup, reps, model.device)[0]


def time_validation_loss(model: Video2WorldModel, batches: list[dict], s: ValidationSettings, reps: int) -> float:
    sigmas = sigma_quantiles(model, s.num_sigmas, int(batches[0]["latents"].shape[2]))

    def one_pass():
        with evaluation_weights(model):
            for k, batch in enumerate(batches):
                for j, sigma in enumerate(sigmas):
                    model.loss_at(batch, sigma, 7919 * k + j, s.num_conditional_frames)

    return measure(one_pass, 1, reps, model.device)[0]


def time_generation(model: Video2WorldModel, batch: dict, s: ValidationSettings, reps: int) -> float:
    from cosmos_predict2.inference.pipeline import Video2WorldPipeline

    pipe = Video2WorldPipeline(model.net, tokenizer=None, device=model.device, log=lambda _: None)
    emb_1_L_D = batch["t5_text_embeddings"]
    uncond = torch.zeros_like(emb_1_L_D) if s.guidance else None

    def generate():
        with evaluation_weights(model), model.forward_context():
            pipe.sample_latents(batch["latents"], s.num_conditional_frames, emb_1_L_D, uncond, s.guidance, 0,
                                s.num_steps)  # fmt: skip

    return measure(generate, 0 if model.device.type == "cpu" else 1, reps, model.device)[0]


def main(argv: list[str] | None = None) -> dict:
    d = ValidationSettings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_size", default="2B", choices=("2B", "14B", "tiny"))
    ap.add_argument("--resolution", default="720p", choices=("480p", "720p"))
    ap.add_argument("--num_clips", type=int, default=d.max_clips, help="V, the validation clips of the loss pass")
    ap.add_argument("--num_steps", type=int, default=d.num_steps)
    ap.add_argument("--guidance", type=float, default=d.guidance)
    ap.add_argument("--validation_iter", type=int, default=d.validation_iter)
    ap.add_argument("--generate_every", type=int, default=d.generate_every)
    ap.add_argument("--num_generate", type=int, default=d.num_generate)
    ap.add_argument("--lora_rank", type=int, default=16)
    ap.add_argument("--checkpointing", default="selective")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)

    tiny = args.model_size == "tiny"
    if not tiny and not torch.cuda.is_available():
        sys.exit("CUDA is required for the 2B/14B benchmark; use --model_size tiny for a CPU smoke check")
    device = torch.device("cpu" if tiny else "cuda")
    shape = LATENT_SHAPES["tiny" if tiny else args.resolution]
    num_clips, num_steps, reps = (2, 2, 1) if tiny else (args.num_clips, args.num_steps, args.reps)
    s = ValidationSettings(max_clips=num_clips, num_steps=num_steps, guidance=args.guidance,
                           validation_iter=args.validation_iter, generate_every=args.generate_every,
                           num_generate=args.num_generate)  # fmt: skip
    model = build_model(args.model_size, device, "fp32" if tiny else "bf16", args.checkpointing, args.lora_rank)
    text_dim = model.net_kwargs()["crossattn_emb_channels"]
    batches = [make_batch(shape, text_dim, device, seed=k) for k in range(num_clips)]
    train_s = time_train_step(model, batches[0], 1 if tiny else 2, reps)
    loss_s = time_validation_loss(model, batches, s, reps)
    gen_s = time_generation(model, batches[0], s, reps)
    training = s.validation_iter * train_s
    per_validation = loss_s + (s.num_generate * gen_s / s.generate_every if s.generate_every else 0.0)
    result = {
        "model": args.model_size, "resolution": "tiny" if tiny else args.resolution, "latent_shape": list(shape),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
        "settings": {"num_clips": num_clips, "num_sigmas": s.num_sigmas, "num_steps": s.num_steps,
                     "guidance": s.guidance, "validation_iter": s.validation_iter,
                     "generate_every": s.generate_every, "num_generate": s.num_generate},
        "train_step_s": train_s, "validation_loss_pass_s": loss_s, "generation_s": gen_s,
        "evaluation_s_per_validation": per_validation, "training_s_per_validation": training,
        "evaluation_fraction_of_training": per_validation / training,
    }  # fmt: skip
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "bench_validation.json").write_text(json.dumps(result, indent=2))
    print(f"{result['model']} {result['resolution']} on {result['device']}: train step {train_s:.3f} s, "
          f"validation loss pass ({num_clips} clips x {s.num_sigmas} sigmas) {loss_s:.3f} s, one generation "
          f"({s.num_steps} steps, guidance {s.guidance:g}) {gen_s:.3f} s")  # fmt: skip
    print(f"per {s.validation_iter} iterations: training {training:.1f} s, evaluation {per_validation:.1f} s "
          f"({s.num_generate} generations every {s.generate_every} validations) = "
          f"{100 * result['evaluation_fraction_of_training']:.1f}% of training time")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
