"""Pretraining of the demo's tiny models (run by `python -m scripts.make_demo_assets`; deterministic on CPU).

1. Tiny T5 (`make_tiny_t5`, d_model 32, seed 0), written to assets/demo/tiny_t5 (it is random: it only has to give
   different prompts different embeddings, and the base model and the LoRA must see the same encoder).
2. Tiny VAE: diffusers `AutoencoderKLWan` with `tiny_vae_config()` (the Wan2.1 class, 8x8x4 compression,
   16 latent channels), trained as a plain autoencoder by `demo.vae_training` (or loaded from a
   `scripts.train_demo_vae` run with `vae_from`), then its latent statistics are folded into
   `quant_conv`/`post_quant_conv` so the fixed Cosmos normalisation (docs/reference.md §3) gives unit-variance latents.
3. Tiny base DiT: the "tiny" `MinimalV1LVGDiT` pretrained *with the real training stack*: the shapes set is written
   in the guide's layout, embedded with `scripts.get_t5_embeddings`, encoded with `scripts.cache_latents`, and trained
   by `scripts.train` with the shipped experiment `predict2_video2world_training_tiny_example`
   (`train_architecture=full`, from scratch) plus overrides; the EMA weights are exported to safetensors (diffusers
   names, loadable by `load_dit_weights`).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from demo import FPS, HEIGHT, NUM_FRAMES, REPO_ROOT, T5_DIM, WIDTH
from demo.synthetic import robot_clip, shapes_clip, write_dataset
from demo.vae_training import VAE_SEED, train_vae

SHAPES_SEED, EVAL_SEED, ROBOT_EVAL_SEED = 0, 999, 998


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB between two uint8-range arrays (any shape)."""
    a = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _to_model(frames_T_H_W_3: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames_T_H_W_3).permute(3, 0, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def fold_latent_statistics(vae, clips: list[np.ndarray]) -> dict:
    """Make the Cosmos normalisation z = (mu - MEAN)/STD (fixed; docs/reference.md §3) unit-variance per channel for
    this VAE: rescale quant_conv's mean rows and the inverse into post_quant_conv. Decoding is unchanged."""
    from cosmos_predict2.tokenizers import LATENTS_MEAN, LATENTS_STD

    z = vae.config.z_dim
    mus = torch.cat([vae.encode(_to_model(c)[None]).latent_dist.mean for c in clips], 0)  # [N, z, t, h, w]
    m = mus.mean(dim=(0, 2, 3, 4))
    s = mus.std(dim=(0, 2, 3, 4)).clamp_min(1e-3)
    MEAN = torch.tensor(LATENTS_MEAN[:z])
    STD = torch.tensor(LATENTS_STD[:z])
    a = STD / s  # mu' = a * (mu - m) + MEAN
    q = vae.quant_conv
    q.weight[:z] *= a.view(-1, 1, 1, 1, 1)
    q.bias[:z] = (q.bias[:z] - m) * a + MEAN
    p = vae.post_quant_conv  # expects mu = (mu' - MEAN) / a + m
    P = p.weight[:, :, 0, 0, 0].clone()
    p.bias += P @ (m - MEAN / a)
    p.weight /= a.view(1, -1, 1, 1, 1)
    return {"raw_latent_mean": m.tolist(), "raw_latent_std": s.tolist()}


@torch.no_grad()
def vae_psnr(tokenizer, clips: list[np.ndarray]) -> float:
    values = []
    for frames in clips:
        video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None]
        rec = tokenizer.decode(tokenizer.encode(video))[0]
        rec_u8 = ((rec + 1) * 127.5).round().clamp(0, 255).permute(1, 2, 3, 0).numpy()
        values.append(psnr(rec_u8, frames))
    return float(np.mean(values))


def repo_relative(text: str) -> str:
    """Paths inside the repository written relative to its root (what ships must not name this machine's folders)."""
    return text.replace(str(REPO_ROOT) + os.sep, "")


def _run(cmd: list[str], log_file: Path, log=print) -> float:
    """Run a repository entry point (python -m ...) from the repository root; output goes to log_file."""
    t0 = time.perf_counter()
    log(f"$ python {shlex.join(cmd)}")
    with open(log_file, "a", encoding="utf-8") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        r = subprocess.run([sys.executable, *cmd], cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}); see {log_file}")
    return time.perf_counter() - t0


def fresh_pretrain_job(job_root: Path, log=print) -> Path:
    """The pretraining job's folder, emptied: scripts.train resumes from a job's latest checkpoint, but the base
    model must be trained from scratch on this VAE's latents, so an earlier run's job (maybe on another VAE) goes."""
    job_dir = job_root / "posttraining" / "demo_pretrain" / "tiny_base"  # job.group / job.name of the overrides
    if job_dir.exists():
        log(f"removing the earlier pretraining job {job_dir}")
        shutil.rmtree(job_dir)
    return job_dir


def pretrain_dit_overrides(dataset_dir: Path, job_root: Path, vae_dir: Path, steps: int, batch: int) -> list[str]:
    return [
        "experiment=predict2_video2world_training_tiny_example",
        f"job.root={job_root}",
        "job.group=demo_pretrain",
        "job.name=tiny_base",
        "model.config.tokenizer_type=wan2.1",
        f"model.config.tokenizer_path={vae_dir}",
        f"dataloader_train.dataset.dataset_dir={dataset_dir}",
        f"dataloader_train.dataset.num_frames={NUM_FRAMES}",
        f"dataloader_train.dataset.video_size=[{HEIGHT},{WIDTH}]",
        "dataloader_train.dataset.use_cached_latents=true",
        f"dataloader_train.batch_size={batch}",
        f"trainer.max_iter={steps}",
        "trainer.logging_iter=100",
        f"checkpoint.save_iter={steps}",
        "optimizer.lr=0.001",
        f"scheduler.cycle_lengths=[{steps}]",
        f"scheduler.warm_up_steps=[{min(100, steps // 10)}]",
        "scheduler.f_max=[1.0]",
        "scheduler.f_min=[0.1]",
    ]


def export_ema_weights(model_ckpt: Path, out: Path) -> int:
    """net_ema.* of a full fine-tuning checkpoint -> one safetensors file with diffusers names (fp32)."""
    from safetensors.torch import save_file

    from cosmos_predict2.io import safe_load
    from cosmos_predict2.networks import build_net, load_dit_weights
    from cosmos_predict2.networks.weights import extract_prefixed, to_diffusers_state_dict

    state = safe_load(model_ckpt)
    prefix = "net_ema." if any(k.startswith("net_ema.") for k in state) else "net."
    sd = {k: v.float().contiguous() for k, v in extract_prefixed(state, prefix).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    source = f"{repo_relative(str(model_ckpt))} ({prefix})"
    save_file(to_diffusers_state_dict(sd), str(out), metadata={"format": "pt", "source": source})
    net = load_dit_weights(build_net("tiny", device="meta"), out)  # check it loads into the inference network
    return sum(p.numel() for p in net.parameters())


def make_assets(
    out_dir: Path, work_dir: Path, vae_steps: int = 1500, dit_steps: int = 3000, num_clips: int = 256,
    dit_batch: int = 16, reuse_vae: bool = False, skip_dit: bool = False, vae_from: Path | None = None, log=print,
) -> dict:
    """Create tiny_t5/, tiny_vae/ and tiny_dit.safetensors in out_dir; intermediate files go to work_dir."""
    from safetensors.torch import save_file  # noqa: F401  (imported early: fail before hours of work)

    from cosmos_predict2.tokenizers import WanVAETokenizer
    from demo.tiny_t5 import make_tiny_t5

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    log_file = work_dir / "make_demo_assets.log"
    timings: dict[str, float] = {}
    report: dict = {}

    t0 = time.perf_counter()
    t5_dir = make_tiny_t5(out_dir / "tiny_t5", d_model=T5_DIM, seed=0)
    timings["tiny_t5_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    vae_dir = out_dir / "tiny_vae"
    if reuse_vae and (vae_dir / "config.json").is_file():
        log(f"reusing {vae_dir} (pass --force to retrain)")
    else:
        vae = train_vae(steps=vae_steps, init_from=vae_from, robot_fraction=0.25, workers=2, log=log,
                        save_path=work_dir / "vae_partial.safetensors")  # fmt: skip
        report["vae_source"] = (f"{vae_from}" if vae_from is not None else "") + (
            f" + {vae_steps} CPU steps" if vae_steps else "")
        stats_clips = [shapes_clip(VAE_SEED + 1, i, num_frames=NUM_FRAMES).frames for i in range(64)]
        report["vae_latent_stats"] = fold_latent_statistics(vae, stats_clips)
        vae.save_pretrained(str(vae_dir), safe_serialization=True)
        timings["vae_s"] = time.perf_counter() - t0
    tok = WanVAETokenizer.from_pretrained(vae_dir, device="cpu")
    report["vae_psnr_shapes_heldout_db"] = vae_psnr(tok, [shapes_clip(EVAL_SEED, i).frames for i in range(16)])
    report["vae_psnr_robot_db"] = vae_psnr(tok, [robot_clip(ROBOT_EVAL_SEED, i).frames for i in range(16)])
    z = torch.cat([tok.encode(torch.from_numpy(shapes_clip(EVAL_SEED, i).frames).permute(3, 0, 1, 2)[None])
                   for i in range(16)])  # fmt: skip
    report["normalised_latent_std"] = float(z.std())
    log(f"VAE: PSNR {report['vae_psnr_shapes_heldout_db']:.2f} dB (held-out shapes), "
        f"{report['vae_psnr_robot_db']:.2f} dB (robot, never seen); latent std {report['normalised_latent_std']:.3f}")

    if skip_dit:
        return report
    # The base DiT through the real pipeline: dataset -> embeddings -> latent cache -> scripts.train.
    data_dir = work_dir / "shapes_dataset"
    t0 = time.perf_counter()
    if not (data_dir / "videos").is_dir() or len(list((data_dir / "videos").glob("*.mp4"))) != num_clips:
        write_dataset(data_dir, "shapes", SHAPES_SEED, num_clips, num_frames=NUM_FRAMES, fps=FPS)
    timings["shapes_dataset_s"] = time.perf_counter() - t0
    timings["embeddings_s"] = _run(["-m", "scripts.get_t5_embeddings", "--dataset_path", str(data_dir),
                                    "--t5_path", str(t5_dir)], log_file, log)  # fmt: skip
    timings["cache_latents_s"] = _run(["-m", "scripts.cache_latents", "--dataset_path", str(data_dir),
                                       "--num_frames", str(NUM_FRAMES), "--height", str(HEIGHT), "--width", str(WIDTH),
                                       "--tokenizer_path", str(vae_dir), "--device", "cpu"], log_file, log)  # fmt: skip
    job_root = work_dir / "checkpoints"
    job_dir = fresh_pretrain_job(job_root, log)
    overrides = pretrain_dit_overrides(data_dir, job_root, vae_dir, dit_steps, dit_batch)
    timings["dit_pretrain_s"] = _run(["-m", "scripts.train", "--config=cosmos_predict2/configs/base/config.py", "--",
                                      *overrides], log_file, log)  # fmt: skip
    ckpt = job_dir / "checkpoints" / "model" / f"iter_{dit_steps:09d}.pt"
    report["dit_parameters"] = export_ema_weights(ckpt, out_dir / "tiny_dit.safetensors")
    train_cmd = "python -m scripts.train --config=cosmos_predict2/configs/base/config.py -- " + " ".join(overrides)
    report["dit_pretrain_command"] = repo_relative(train_cmd)
    report["dit_pretrain_log"] = repo_relative(str(job_dir / "stdout.log"))
    report["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    report["settings"] = dict(vae_steps=vae_steps, dit_steps=dit_steps, num_clips=num_clips, dit_batch=dit_batch,
                              video=f"{WIDTH}x{HEIGHT}x{NUM_FRAMES}f@{FPS}fps", t5_dim=T5_DIM)  # fmt: skip
    (out_dir / "make_demo_assets.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


# How the shipped tiny_vae was made (on a GPU; the CPU default of make_demo_assets trains a weaker one for hours).
SHIPPED_VAE_RECIPE = [
    "The VAE weights come from two time-budgeted `scripts.train_demo_vae` runs on one H200 (not bitwise "
    "reproducible because the budget is wall time; `--steps N` is deterministic on a CPU), then the command above:",
    "",
    "```bash",
    "python -m scripts.train_demo_vae --out outputs/vae1.safetensors --seconds 420 --device cuda --batch 64 "
    "--robot_fraction 0.25 --workers 12  # 1154 steps, robot PSNR 22.26 dB",
    "python -m scripts.train_demo_vae --init outputs/vae1.safetensors --out outputs/vae2.safetensors "
    "--seconds 330 --device cuda --batch 64 --lr 5e-4 --robot_fraction 0.25 --workers 12  # +886 steps, 22.70 dB",
    "```",
    "",
]


def write_assets_readme(out_dir: Path, report: dict, command: str) -> Path:
    """assets/demo/README.md: how the shipped weights were made (command, seeds, time, commit, quality)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True).stdout.strip() or "unknown"  # fmt: skip
    except OSError:
        commit = "unknown"
    sizes = {p.relative_to(out_dir).as_posix(): p.stat().st_size for p in sorted(out_dir.rglob("*")) if p.is_file()
             and p.name != "README.md"}  # fmt: skip
    t = report.get("timings_s", {})
    lines = [
        "# Demo assets: the tiny models of `make demo`",
        "",
        "Made by the repository's own scripts (T5 and DiT deterministically on CPU, torch "
        f"{torch.__version__}), at commit `{commit}`:",
        "",
        "```bash",
        command,
        "```",
        "",
        *(SHIPPED_VAE_RECIPE if report.get("vae_source") and not report.get("settings", {}).get("vae_steps") else []),
        "| file | what |",
        "|---|---|",
        f"| `tiny_t5/` | `make_tiny_t5(d_model={T5_DIM}, seed=0)`: a random 2-layer T5 encoder + tokenizer (embeddings "
        f"{T5_DIM} wide) |",
        "| `tiny_vae/` | diffusers `AutoencoderKLWan` (the Wan2.1 VAE class) with `tiny_vae_config()` (base_dim 8, "
        "z_dim 16, 8x spatial / 4x temporal), trained as an autoencoder (`demo/vae_training.py`) on synthetic "
        f"'shapes' clips (seed {VAE_SEED}) and a quarter robot clips of their own seed (not the evaluation clips), "
        "latent statistics folded in so the Cosmos normalisation gives unit variance |",
        "| `tiny_dit.safetensors` | the `tiny` `MinimalV1LVGDiT` (64 channels, 2 blocks, 2 heads, cross-attention "
        f"{T5_DIM}), diffusers key names, fp32: the EMA weights of a from-scratch pretraining with `scripts.train` "
        "(experiment `predict2_video2world_training_tiny_example`, `train_architecture=full`) on the shapes set "
        f"(seed {SHAPES_SEED}) |",
        "| `make_demo_assets.json` | the full report of the run (settings, timings, PSNR, pretraining command) |",
        "",
        "Quality:",
        "",
        f"- VAE reconstruction PSNR: {report.get('vae_psnr_shapes_heldout_db', float('nan')):.2f} dB on held-out "
        f"shapes clips (seed {EVAL_SEED}), {report.get('vae_psnr_robot_db', float('nan')):.2f} dB on teal-robot "
        f"clips it never saw (seed {ROBOT_EVAL_SEED}; 17 frames, 64x64).",
        f"- Normalised latent std on held-out clips: {report.get('normalised_latent_std', float('nan')):.3f}.",
        "",
        "Time on 2 CPU cores: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items()) + ".",
        "",
        "Sizes: " + ", ".join(f"`{k}` {v / 1e6:.2f} MB" for k, v in sizes.items())
        + f"; total {sum(sizes.values()) / 1e6:.2f} MB.",
        "",
        "The base DiT pretraining command (run by the script):",
        "",
        "```",
        report.get("dit_pretrain_command", "(not run)"),
        "```",
        "",
    ]
    path = out_dir / "README.md"
    path.write_text("\n".join(lines))
    return path
