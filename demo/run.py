"""The end-to-end CPU demo (issue 6): the guide's LoRA post-training flow on the tiny models, through the real
entry points, each run as its own process exactly as a user would type it:

1. write the "sks teal robot" dataset (videos/*.mp4) and held-out clips (ground truth + conditioning frame);
2. `python -m scripts.get_t5_embeddings_from_cosmos_nemo_assets` (metas/*.txt, t5_xxl/*.pickle; tiny T5);
3. `python -m scripts.cache_latents` (tiny VAE) and `python -m scripts.train` with the shipped experiment
   `predict2_video2world_lora_training_tiny_example` on the pretrained tiny base (checkpoints in the guide's layout);
4. `python examples/video2world_lora.py` from each held-out first frame: base model, then base + LoRA;
5. PSNR of the predicted continuation (frames 1..16) against the held-out ground truth, contact sheet, loss curve,
   summary.json.
Training also validates (`trainer.run_validation=true dataloader_val=heldout`, docs/guide.md "Validation") a few
times on clips held out of the training folder: the validation loss at fixed sigmas and held-out PSNR/SSIM of
base and LoRA per evaluation (JOB/eval.jsonl, validation.png, summary.json "validation").
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from demo import (
    DIT_PATH,
    FPS,
    HEIGHT,
    NUM_FRAMES,
    REPO_ROOT,
    ROBOT_PROMPT,
    T5_DIR,
    VAE_DIR,
    WIDTH,
)
from demo.assets import psnr
from demo.synthetic import read_frames, robot_clip, write_dataset

TRAIN_SEED, HELDOUT_SEED = 1, 2
EXPERIMENT = "predict2_video2world_lora_training_tiny_example"
CONFIG = "cosmos_predict2/configs/base/config.py"


@dataclass
class DemoSettings:
    out_dir: Path = REPO_ROOT / "outputs" / "demo"
    num_train_clips: int = 48
    num_heldout: int = 4
    train_steps: int = 600
    batch_size: int = 8
    lr: float = 2**-8
    lora_rank: int = 8
    sampling_steps: int = 35
    guidance: float = 0.0
    seed: int = 0
    num_validations: int = 4  # evaluations during training (validation loss and held-out generations)
    validation_steps: int = 10  # sampler steps of the in-training generations (kept small: < 15 s in all)


class DemoError(RuntimeError):
    pass


# Written into every out_dir the demo fills: only a folder holding it is ever cleared, and then only of the
# entries the demo writes (OUTPUT_ENTRIES), so a mistyped --out_dir can never erase a user's files.
MARKER = ".cosmos_demo_output"
OUTPUT_ENTRIES = ("dataset", "heldout", "checkpoints", "videos", "demo.log", "contact_sheet.png", "loss_curve.png",
                  "validation.png", "summary.json", MARKER)  # fmt: skip


def prepare_out_dir(out: Path) -> None:
    """Make `out` ready for a fresh run: create it, or clear an earlier demo run's outputs from it (the trainer
    would otherwise resume the finished job). Refuses (DemoError) a file, or a non-empty folder without MARKER."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise DemoError(f"--out_dir {out} exists and is not a folder; choose another --out_dir")
        if not (out / MARKER).is_file() and any(out.iterdir()):
            raise DemoError(f"--out_dir {out} already exists and was not written by the demo (no {MARKER} in it), "
                            "so it is left untouched: choose another --out_dir or delete it yourself")  # fmt: skip
        for name in OUTPUT_ENTRIES:
            entry = out / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by `python -m scripts.demo`; the next demo run with this --out_dir replaces "
                              "the demo's outputs here\n")  # fmt: skip


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


class _Runner:
    def __init__(self, log_file: Path, echo) -> None:
        self.log_file, self.echo = log_file, echo
        self.timings: dict[str, float] = {}
        self.commands: list[str] = []

    def __call__(self, stage: str, args: list[str]) -> float:
        """Run `python ARGS` from the repository root; output goes to the demo log; raise on failure."""
        printable = "python " + shlex.join(args)
        self.commands.append(printable)
        self.echo(f"  $ {printable}")
        t0 = time.perf_counter()
        with open(self.log_file, "a", encoding="utf-8") as f:
            f.write(f"\n$ {printable}\n")
            f.flush()
            r = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - t0
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds
        if r.returncode:
            tail = "".join(self.log_file.read_text(encoding="utf-8", errors="replace").splitlines(True)[-15:])
            raise DemoError(f"`{printable}` failed with exit code {r.returncode}; last lines of "
                            f"{_rel(self.log_file)}:\n{tail}")  # fmt: skip
        return seconds


def check_assets() -> None:
    missing = [p for p in (DIT_PATH, VAE_DIR / "config.json", T5_DIR / "config.json") if not p.exists()]
    if missing:
        raise DemoError(f"demo assets missing: {', '.join(_rel(p) for p in missing)}. They ship with the repository "
                        "(git checkout assets/demo) or can be re-created with `python -m scripts.make_demo_assets`.")


def train_overrides(s: DemoSettings, dataset_dir: Path, job_root: Path) -> list[str]:
    return [
        f"experiment={EXPERIMENT}",
        f"job.root={_rel(job_root)}",
        "job.name=demo_teal_robot",
        f"model.config.dit_path={_rel(DIT_PATH)}",
        "model.config.tokenizer_type=wan2.1",
        f"model.config.tokenizer_path={_rel(VAE_DIR)}",
        f"model.config.lora_rank={s.lora_rank}",
        f"model.config.lora_alpha={s.lora_rank}",
        f"dataloader_train.dataset.dataset_dir={_rel(dataset_dir)}",
        f"dataloader_train.dataset.num_frames={NUM_FRAMES}",
        f"dataloader_train.dataset.video_size=[{HEIGHT},{WIDTH}]",
        "dataloader_train.dataset.use_cached_latents=true",
        f"dataloader_train.batch_size={s.batch_size}",
        f"optimizer.lr={s.lr}",
        f"trainer.max_iter={s.train_steps}",
        "trainer.logging_iter=1",
        "trainer.callbacks.progress_bar.enabled=false",
        f"checkpoint.save_iter={s.train_steps}",
        f"scheduler.cycle_lengths=[{s.train_steps}]",
        *validation_overrides(s),
    ]


def validation_overrides(s: DemoSettings) -> list[str]:
    """A held-out tenth of the training folder, evaluated `num_validations` times, generating each time."""
    every = max(1, s.train_steps // max(1, s.num_validations))
    return [
        "dataloader_val=heldout", "dataloader_val.fraction=0.1", "trainer.run_validation=true",
        f"trainer.validation_iter={every}", "trainer.validation.generate_every=1", "trainer.validation.num_generate=2",
        "trainer.validation.max_clips=4", "trainer.validation.num_sigmas=3",
        f"trainer.validation.num_steps={s.validation_steps}", f"trainer.validation.guidance={s.guidance}",
        f"trainer.validation.seed={s.seed}",
    ]  # fmt: skip


def read_validation(job_dir: Path) -> list[dict]:
    """The per-evaluation numbers of JOB/eval.jsonl (without paths)."""
    path = job_dir / "eval.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    keep = ("val/loss", "val/loss_base", "val/psnr", "val/psnr_base", "val/delta_psnr", "val/ssim", "val/ssim_base",
            "val/delta_ssim")  # fmt: skip
    return [{"iteration": r["iteration"], **{k.removeprefix("val/"): round(r[k], 4) for k in keep if k in r}}
            for r in map(json.loads, lines)]  # fmt: skip


def read_losses(stdout_log: Path) -> tuple[list[int], list[float]]:
    its, losses = [], []
    for m in re.finditer(r"iteration (\d+)/\d+ \| loss ([-+0-9.eEnaifNI]+)", stdout_log.read_text(encoding="utf-8")):
        its.append(int(m.group(1)))
        losses.append(float(m.group(2)))
    return its, losses


def _gen_args(s: DemoSettings, batch_json: Path) -> list[str]:
    return [
        "examples/video2world_lora.py", "--model_size", "tiny", "--tokenizer_path", _rel(VAE_DIR),
        "--t5_path", _rel(T5_DIR), "--size", f"{WIDTH}x{HEIGHT}", "--num_frames", str(NUM_FRAMES), "--fps", str(FPS),
        "--batch_input_json", _rel(batch_json), "--guidance", str(s.guidance),
        "--num_steps", str(s.sampling_steps), "--seed", str(s.seed), "--device", "cpu",
        "--disable_guardrail", "--disable_prompt_refiner",
        # guidance needs an unconditional branch: the zero embedding the model saw under text dropout
        *(["--negative_prompt", ""] if s.guidance else []),
    ]  # fmt: skip


def run_demo(s: DemoSettings, echo=print) -> dict:
    t_start = time.perf_counter()
    out = Path(s.out_dir)
    prepare_out_dir(out)  # before anything else: refuses a folder the demo did not write
    check_assets()
    run = _Runner(out / "demo.log", echo)
    dataset_dir, heldout_dir, job_root, gen_dir = out / "dataset", out / "heldout", out / "checkpoints", out / "videos"

    echo(f"[1/5] writing {s.num_train_clips} training clips and {s.num_heldout} held-out clips of the sks teal robot")
    t0 = time.perf_counter()
    write_dataset(dataset_dir, "robot", TRAIN_SEED, s.num_train_clips, num_frames=NUM_FRAMES, fps=FPS,
                  write_metas=False)  # fmt: skip  (metas come from the embedding script, as in the guide)
    heldout = write_dataset(heldout_dir, "robot", HELDOUT_SEED, s.num_heldout, num_frames=NUM_FRAMES, fps=FPS,
                            write_metas=False, prefix="heldout")  # fmt: skip
    from PIL import Image

    cond_frames = []
    for video in heldout:
        png = heldout_dir / "conditioning" / f"{video.stem}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(robot_clip(HELDOUT_SEED, int(video.stem.split("_")[-1])).frames[0]).save(png)
        cond_frames.append(png)
    run.timings["dataset"] = time.perf_counter() - t0

    echo("[2/5] T5 embeddings (tiny T5) with the guide's script")
    run("embeddings", ["-m", "scripts.get_t5_embeddings_from_cosmos_nemo_assets", "--dataset_path", _rel(dataset_dir),
                       "--prompt", ROBOT_PROMPT, "--t5_path", _rel(T5_DIR)])  # fmt: skip

    echo(f"[3/5] LoRA training: {s.train_steps} iterations, rank {s.lora_rank}, batch {s.batch_size}")
    run("latent_cache", ["-m", "scripts.cache_latents", "--dataset_path", _rel(dataset_dir), "--num_frames",
                         str(NUM_FRAMES), "--height", str(HEIGHT), "--width", str(WIDTH), "--tokenizer_path",
                         _rel(VAE_DIR), "--device", "cpu"])  # fmt: skip
    overrides = train_overrides(s, dataset_dir, job_root)
    run("train", ["-m", "scripts.train", f"--config={CONFIG}", "--", *overrides])
    job_dir = job_root / "posttraining" / "video2world_lora" / "demo_teal_robot"
    ckpt_dir = job_dir / "checkpoints"
    latest = (ckpt_dir / "latest_checkpoint.txt").read_text().strip()
    lora_ckpt = ckpt_dir / "model" / latest

    echo(f"[4/5] generating from {len(heldout)} held-out first frames: base model, then base + LoRA")
    outputs = {}
    models = (("base", ["--dit_path", _rel(DIT_PATH)]), ("lora", ["--use_lora", "--dit_path", _rel(lora_ckpt)]))
    for name, extra in models:
        jobs = [{"input_video": _rel(png), "prompt": ROBOT_PROMPT,
                 "output_video": _rel(gen_dir / name / f"{v.stem}.mp4")} for png, v in zip(cond_frames, heldout)]
        batch_json = gen_dir / f"{name}_batch.json"
        batch_json.parent.mkdir(parents=True, exist_ok=True)
        batch_json.write_text(json.dumps(jobs, indent=2))
        run(f"generate_{name}", [*_gen_args(s, batch_json), *extra])
        outputs[name] = [gen_dir / name / f"{v.stem}.mp4" for v in heldout]

    echo("[5/5] scoring and pictures")
    t0 = time.perf_counter()
    from demo.images import contact_sheet, loss_curve

    per_clip, groups = [], []
    for i, video in enumerate(heldout):
        gt = read_frames(video)
        base, lora = read_frames(outputs["base"][i]), read_frames(outputs["lora"][i])
        for name, frames in (("base", base), ("lora", lora)):
            if frames.shape != gt.shape:
                raise DemoError(f"{outputs[name][i]}: {frames.shape} frames, expected {gt.shape}")
        # The continuation: every frame after the conditioning frame.
        per_clip.append({"clip": video.stem, "base_psnr_db": psnr(base[1:], gt[1:]),
                         "lora_psnr_db": psnr(lora[1:], gt[1:])})
        groups.append((video.stem, [("truth", gt), ("base", base), ("LoRA", lora)]))
    sheet = contact_sheet(out / "contact_sheet.png", groups[:2], frame_indices=list(range(0, NUM_FRAMES, 2)))
    its, losses = read_losses(job_dir / "stdout.log")
    curve = loss_curve(out / "loss_curve.png", its, losses, title=f"LoRA training loss (rank {s.lora_rank}, "
                       f"{s.train_steps} iterations, sks teal robot)")  # fmt: skip
    validation = read_validation(job_dir)
    if validation:
        from cosmos_predict2.training.evaluation import metrics_plot

        records = [{f"val/{k}" if k != "iteration" else k: v for k, v in r.items()} for r in validation]
        metrics_plot(out / "validation.png", records, title="validation during training (held-out clips): "
                     "current vs base (grey)")  # fmt: skip
    run.timings["scoring"] = time.perf_counter() - t0

    base_psnr = float(np.mean([c["base_psnr_db"] for c in per_clip]))
    lora_psnr = float(np.mean([c["lora_psnr_db"] for c in per_clip]))
    summary = {
        "metric": "PSNR (dB) of generated frames 1..16 against the held-out ground truth, mean over held-out clips",
        "base_psnr_db": round(base_psnr, 3),
        "lora_psnr_db": round(lora_psnr, 3),
        "lora_gain_db": round(lora_psnr - base_psnr, 3),
        "per_clip": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in c.items()} for c in per_clip],
        "validation": validation,
        "final_train_loss_mean_last_10pct": float(np.mean(losses[-max(1, len(losses) // 10):])) if losses else None,
        "paths": {
            "dataset": _rel(dataset_dir), "heldout": _rel(heldout_dir), "job_dir": _rel(job_dir),
            "lora_checkpoint": _rel(lora_ckpt), "base_videos": [_rel(p) for p in outputs["base"]],
            "lora_videos": [_rel(p) for p in outputs["lora"]], "contact_sheet": _rel(sheet),
            "loss_curve": _rel(curve), "log": _rel(run.log_file),
            "validation_plot": _rel(out / "validation.png") if validation else None,
        },  # fmt: skip
        "commands": run.commands,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()},
        "timings_s": {k: round(v, 1) for k, v in run.timings.items()},
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def print_summary(summary: dict, echo=print) -> None:
    p = summary["paths"]
    echo("")
    echo("Demo finished in {:.0f} s ({})".format(
        summary["total_s"], ", ".join(f"{k} {v:.0f} s" for k, v in summary["timings_s"].items())))
    echo(f"  dataset          {p['dataset']}/(videos, metas, t5_xxl, latents)")
    echo(f"  held-out clips   {p['heldout']}/videos, conditioning frames in {p['heldout']}/conditioning")
    echo(f"  training job     {p['job_dir']} (config.yaml, stdout.log, checkpoints/)")
    echo(f"  LoRA checkpoint  {p['lora_checkpoint']}")
    echo(f"  base videos      {p['base_videos'][0]} ...")
    echo(f"  LoRA videos      {p['lora_videos'][0]} ...")
    echo(f"  contact sheet    {p['contact_sheet']}  (rows: truth, base, LoRA; columns: frames)")
    echo(f"  loss curve       {p['loss_curve']}")
    if p.get("validation_plot"):
        echo(f"  validation       {p['validation_plot']}  (val loss, held-out PSNR/SSIM per evaluation; base grey)")
    echo(f"  summary          {Path(p['contact_sheet']).parent / 'summary.json'}")
    echo("")
    echo(f"Held-out continuation PSNR (frames 1-16 vs ground truth, {len(summary['per_clip'])} clips): "
         f"base {summary['base_psnr_db']:.2f} dB -> LoRA {summary['lora_psnr_db']:.2f} dB "
         f"({summary['lora_gain_db']:+.2f} dB)")  # fmt: skip
    for r in summary.get("validation", []):
        gen = (f" | held-out PSNR {r['psnr']:.2f} dB (base {r['psnr_base']:.2f}, {r['delta_psnr']:+.2f}), SSIM "
               f"{r['ssim']:.3f} (base {r['ssim_base']:.3f})" if "delta_psnr" in r else "")  # fmt: skip
        base_loss = r.get("loss_base", float("nan"))
        echo(f"Validation at iteration {r['iteration']}: loss {r['loss']:.4f} (base {base_loss:.4f}){gen}")
