"""Evaluation during training (docs/guide.md "Validation"): validation loss at fixed sigmas, held-out generations
scored against the real frames, eval.jsonl, best_checkpoint.txt and early stopping.

    trainer.run_validation=true dataloader_val=heldout trainer.validation_iter=500 trainer.validation.patience=3

- Validation loss: the training loss (`Video2WorldModel.loss_at`, the same code path as the training step) of every
  validation clip at `num_sigmas` fixed sigmas (quantiles of the training log-normal: `sigma_quantiles`), with noise
  seeded per (clip, sigma), `num_conditional_frames` conditioning latent frames and the text kept. Each clip is
  loaded under a fixed seed (its window). So the numbers depend on the weights only: recomputed from a checkpoint
  they are bit-identical (`scripts/evaluate.py`).
- Held-out generations (every `generate_every`-th validation): the first `num_conditional_frames` latent frames of
  `num_generate` clips are encoded, the sampler of inference (`Video2WorldPipeline.sample_latents`) continues them
  at the clip's own size, `num_steps` steps, `guidance` (negative: the zero text embedding), seed per clip; PSNR and
  SSIM (training/metrics.py) of the generated continuation against the real frames. The base model (adapter scale
  0) is generated once (JOB/evaluation/base/, reused on resume); Δ = current - base. An adapter whose generations
  equal the base's exactly logs a warning.
- With EMA the current model is the EMA weights (what inference uses). Every rank computes everything (under FSDP
  and context parallelism every rank must take part in each forward); only rank 0 writes: JOB/eval.jsonl (one line
  per evaluation), JOB/evaluation/iter_*/ (contact_sheet.png: rows truth, base, current; mp4s), TensorBoard
  `val/*` scalars and the contact sheet, JOB/checkpoints/best_checkpoint.txt.
- Schedule by iteration number (multiples of `validation_iter`), evaluated after that iteration's checkpoint is
  saved: a resumed run drops eval.jsonl lines past its checkpoint, evaluates its own iteration when that was due
  and has no line, and so neither repeats nor skips one. An error inside an evaluation is logged and training goes
  on (`raise_errors=True` re-raises); the checkpoint is already on disk either way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from cosmos_predict2.io import atomic_write_text
from cosmos_predict2.training.metrics import psnr, ssim
from cosmos_predict2.training.monitors import Monitor, MonitorContext

log = logging.getLogger("cosmos_predict2.training")

EVAL_LOG = "eval.jsonl"
BEST = "best_checkpoint.txt"
LOWER_IS_BETTER = ("val/loss",)


@dataclass
class ValidationSettings:
    """`trainer.validation_iter` and `trainer.validation.*` (configs/base/config.py documents each)."""

    validation_iter: int = 500
    max_clips: int = 16
    num_sigmas: int = 5
    num_conditional_frames: int = 1
    seed: int = 0
    generate_every: int = 4
    num_generate: int = 2
    num_steps: int = 35
    guidance: float = 7.0
    best_metric: str = "val/loss"
    patience: int = 0
    raise_errors: bool = False
    fps: int = 16  # of the mp4s written

    @classmethod
    def from_config(cls, trainer_cfg: Any, **overrides: Any) -> ValidationSettings:
        from omegaconf import OmegaConf

        given = trainer_cfg.get("validation") or {}
        given = dict(OmegaConf.to_container(given, resolve=True) if OmegaConf.is_config(given) else given)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(f"trainer.validation: unknown key(s) {unknown}; known: {sorted(known)}")
        given.update(overrides)
        return cls(validation_iter=int(trainer_cfg.get("validation_iter", 500)), **given)

    def generates_at(self, iteration: int) -> bool:
        return self.generate_every > 0 and self.num_generate > 0 and \
            iteration % (self.validation_iter * self.generate_every) == 0  # fmt: skip


def sigma_quantiles(model, num: int, num_latent_frames: int) -> list[float]:
    """`num` sigmas at the probabilities (i + 1/2) / num of the training distribution's log-normal part:
    exp(p_mean + p_std * Phi^-1(p)), times sqrt(T_latent) as for video training (docs/reference.md §2). The 5%
    high-sigma tail is left out: its losses are near constant and would hide the rest."""
    c = model.config
    scale = num_latent_frames**0.5 if c.video_noise_multiplier and num_latent_frames > 1 else 1.0
    normal = NormalDist()
    return [math.exp(c.p_mean + c.p_std * normal.inv_cdf((i + 0.5) / num)) * scale for i in range(num)]


# --- the model in evaluation state ----------------------------------------------------------------------------


@contextlib.contextmanager
def evaluation_weights(model, base: bool = False):
    """The weights evaluation scores: the EMA (when enabled) in eval mode, no gradients; base=True: the adapters off
    (scale 0, the base model exactly). Everything is restored on exit."""
    from cosmos_predict2.lora import set_lora_scale

    net, was_training = model.net, model.net.training
    ema = model.ema.applied(net) if model.ema is not None else contextlib.nullcontext()
    net.eval()
    try:
        with torch.no_grad(), ema:
            if base:
                set_lora_scale(net, 0.0)
            try:
                yield
            finally:
                if base:
                    set_lora_scale(net, 1.0)
                _reshard(net)  # before the EMA context puts the trained weights back into the sharded parameters
    finally:
        net.train(was_training)


def _reshard(net) -> None:
    """FSDP2 keeps the root's parameters unsharded after a forward without backward (it expects the backward to
    need them): shard them again, so parameters are the DTensors the EMA and the optimizer hold."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return
    for module in net.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


class Evaluator:
    """Computes the numbers of one evaluation of `model` on `clips` (data/heldout.ValidationClips)."""

    def __init__(self, model, clips, settings: ValidationSettings) -> None:
        if len(clips) == 0:
            raise ValueError("the validation set is empty (dataloader_val)")
        self.model, self.clips, self.s = model, clips, settings
        self._batches: dict[int, dict] = {}

    def batch(self, k: int) -> dict:
        """Clip k as a batch of one, loaded under a fixed seed (the same window every time)."""
        if k not in self._batches:
            from torch.utils.data import default_collate

            from cosmos_predict2.training.data import SeededDataset

            item = SeededDataset(self.clips.dataset)[(self.clips.indices[k], self.s.seed * 1_000_003 + k)]
            batch = default_collate([item])
            if "latents" not in batch:  # encode once, not once per sigma (the VAE dominates small evaluations)
                with torch.no_grad():
                    batch["latents"] = self.model.get_latents(batch)
                del batch["video"]  # 250 MB of uint8 per 93-frame 720p clip: generations re-read the frames
            self._batches[k] = batch
        return self._batches[k]

    def sigmas(self) -> list[float]:
        latents = self.model.get_latents(self.batch(0))
        return sigma_quantiles(self.model, self.s.num_sigmas, int(latents.shape[2]))

    def validation_loss(self, base: bool = False) -> dict[str, float]:
        """val/loss (mean over clips and sigmas) and val/loss_sigma_X (mean over clips) for each sigma."""
        sigmas = self.sigmas()
        per_sigma = [0.0] * len(sigmas)
        with evaluation_weights(self.model, base):
            for k in range(len(self.clips)):
                batch = self.batch(k)
                for j, sigma in enumerate(sigmas):
                    seed = self.s.seed * 1_000_003 + 7919 * k + j
                    loss = self.model.loss_at(batch, sigma, seed, self.s.num_conditional_frames)
                    per_sigma[j] += float(loss) / len(self.clips)
        out = {"val/loss": sum(per_sigma) / len(per_sigma)}
        out.update({f"val/loss_sigma_{sigma:.4g}": v for sigma, v in zip(sigmas, per_sigma)})
        return out

    def num_conditional_pixel_frames(self) -> int:
        return 1 + 4 * (self.s.num_conditional_frames - 1)

    def ground_truth(self, k: int) -> np.ndarray:
        """The real frames of clip k (uint8 [T, H, W, 3]): its first window at the training size."""
        from cosmos_predict2.data.video import load_clip

        ds = self.clips.dataset
        video_3_T_H_W, _ = load_clip(self.clips.videos[k], 0, ds.num_frames, ds.video_size, ds.resize_mode)
        return video_3_T_H_W.permute(1, 2, 3, 0).numpy()

    def generate(self, k: int, truth_T_H_W_3: np.ndarray, base: bool = False) -> np.ndarray:
        """The continuation of clip k from its first conditioning frames (uint8 [T, H, W, 3])."""
        from cosmos_predict2.inference.conditioning import build_input_video, video_to_uint8_frames
        from cosmos_predict2.inference.pipeline import Video2WorldPipeline

        model, n_pix = self.model, self.num_conditional_pixel_frames()
        truth_3_T_H_W = torch.from_numpy(truth_T_H_W_3).permute(3, 0, 1, 2)
        video_1_3_T_H_W = build_input_video(truth_3_T_H_W[:, :n_pix], truth_3_T_H_W.shape[1], is_image=False)
        emb_1_L_D = model.text_embeddings(self.batch(k))
        uncond = torch.zeros_like(emb_1_L_D) if self.s.guidance else None
        pipe = Video2WorldPipeline(model.net, model.tokenizer, device=model.device, log=log.info)
        with evaluation_weights(model, base), model.forward_context():
            gt_1_C_T_H_W = model.tokenizer.encode(video_1_3_T_H_W.to(model.device)).float()
            samples = pipe.sample_latents(gt_1_C_T_H_W, self.s.num_conditional_frames, emb_1_L_D, uncond,
                                          self.s.guidance, self.s.seed + k, self.s.num_steps)  # fmt: skip
            video_1_3_T_H_W = model.tokenizer.decode(samples.to(gt_1_C_T_H_W.dtype))
        return video_to_uint8_frames(video_1_3_T_H_W[0].float().cpu())

    def generations(self, base: bool = False) -> tuple[dict[str, float], list[tuple[str, np.ndarray, np.ndarray]]]:
        """val/psnr and val/ssim (means over the generated clips, continuation frames only) and the
        (stem, truth, generated) frames."""
        n_pix, scores, videos = self.num_conditional_pixel_frames(), [], []
        for k in range(min(self.s.num_generate, len(self.clips))):
            truth = self.ground_truth(k)
            frames = self.generate(k, truth, base)
            scores.append((psnr(frames[n_pix:], truth[n_pix:]), ssim(frames[n_pix:], truth[n_pix:])))
            videos.append((self.clips.stems[k], truth, frames))
        return {"val/psnr": float(np.mean([p for p, _ in scores])),
                "val/ssim": float(np.mean([s for _, s in scores]))}, videos  # fmt: skip


# --- what rank 0 writes -----------------------------------------------------------------------------------------


def contact_sheet(path: Path, groups: list[tuple[str, list[tuple[str, np.ndarray]]]], columns: int = 8) -> np.ndarray:
    """PNG of one block per clip: rows (label, frames [T, H, W, 3]), `columns` frames spread over T; returns it."""
    from PIL import Image, ImageDraw

    T, H, W = groups[0][1][0][1].shape[:3]
    picks = sorted({round(i * (T - 1) / max(columns - 1, 1)) for i in range(min(columns, T))})
    label_w, title_h = 72, 14
    rows = sum(len(r) for _, r in groups)
    sheet = Image.new("RGB", (label_w + len(picks) * (W + 2), len(groups) * title_h + rows * (H + 2)), "white")
    draw, y = ImageDraw.Draw(sheet), 0
    for title, block in groups:
        draw.text((2, y + 1), f"{title} (frames {', '.join(map(str, picks))})", fill="black")
        y += title_h
        for label, frames in block:
            draw.text((2, y + H // 2 - 5), label, fill="black")
            for j, t in enumerate(picks):
                sheet.paste(Image.fromarray(frames[t]), (label_w + j * (W + 2), y))
            y += H + 2
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return np.asarray(sheet)


def write_mp4(path: Path, frames_T_H_W_3: np.ndarray, fps: int) -> str:
    from cosmos_predict2.data.video import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames_T_H_W_3, fps=fps)
    return str(path)


def read_eval_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def better(metric: str, a: float, b: float) -> bool:
    """a is better than b for `metric` (losses: lower; PSNR, SSIM: higher)."""
    return a < b if metric.startswith(LOWER_IS_BETTER) else a > b


def best_record(records: list[dict], metric: str) -> dict | None:
    best = None
    for r in records:
        value = r.get(metric)
        if value is not None and math.isfinite(value) and (best is None or better(metric, value, best[metric])):
            best = r
    return best


def evaluations_since_best(records: list[dict], metric: str) -> int:
    scored = [r for r in records if r.get(metric) is not None]
    best = best_record(scored, metric)
    return 0 if best is None else len(scored) - 1 - scored.index(best)


class BaseReference:
    """The base model's numbers and generations, computed once per job and kept in JOB/evaluation/base/
    (base.json, mp4s), so a resumed run or scripts.evaluate compares with the same base. Under LoRA the base is
    the adapters at scale 0 (available at any time); under full fine-tuning only the weights before the first
    step are the base, so it is computed when a run starts at iteration 0 or never."""

    def __init__(self, evaluator: Evaluator, folder: Path, is_main: bool) -> None:
        self.ev, self.folder, self.is_main = evaluator, Path(folder), is_main
        self.metrics: dict[str, float] | None = None
        self.frames: list[np.ndarray] | None = None

    def fingerprint(self) -> dict:
        s = self.ev.s
        return {"stems": self.ev.clips.stems, "num_sigmas": s.num_sigmas, "seed": s.seed, "num_steps": s.num_steps,
                "num_conditional_frames": s.num_conditional_frames, "guidance": s.guidance,
                "num_generate": s.num_generate}  # fmt: skip

    def load(self) -> bool:
        path = self.folder / "base.json"
        if self.metrics is None and path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("fingerprint") == self.fingerprint():
                self.metrics = saved["metrics"]
        return self.metrics is not None

    def compute(self, generate: bool) -> None:
        t0 = time.perf_counter()
        metrics = self.ev.validation_loss(base=True)
        videos = []
        if generate:
            gen, videos = self.ev.generations(base=True)
            metrics.update(gen)
        self.metrics, self.frames = metrics, [frames for _, _, frames in videos]
        if self.is_main:
            paths = [write_mp4(self.folder / f"{stem}.mp4", frames, self.ev.s.fps) for stem, _, frames in videos]
            record = {"fingerprint": self.fingerprint(), "metrics": metrics, "videos": paths}
            atomic_write_text(self.folder / "base.json", json.dumps(record, indent=1) + "\n")
        log.info(f"Validation of the base model: {_describe(metrics)} ({time.perf_counter() - t0:.1f} s, loading "
                 "included)")  # fmt: skip

    def prepare(self, can_compute: bool, generate: bool) -> None:
        if self.load():
            return
        if can_compute:
            self.compute(generate)
        else:
            log.info(f"Validation: no base-model reference in {self.folder} and the weights are no longer the base "
                     "(full fine-tuning resumed): evaluations report no Δ")  # fmt: skip

    def base_frames(self, k: int, like: np.ndarray) -> np.ndarray | None:
        """The base generation of clip k: in memory when computed by this process, else read back from its mp4."""
        if self.frames is not None and k < len(self.frames):
            return self.frames[k]
        path = self.folder / f"{self.ev.clips.stems[k]}.mp4"
        if not path.is_file():
            return None
        from cosmos_predict2.data.video import read_video_window

        frames, _ = read_video_window(path, 0, like.shape[0])
        return frames if frames.shape == like.shape else None


def _describe(metrics: dict) -> str:
    keys = [k for k in ("val/loss", "val/psnr", "val/ssim", "val/delta_psnr", "val/delta_ssim") if k in metrics]
    return ", ".join(f"{k.removeprefix('val/')} {metrics[k]:.4f}" for k in keys)


def run_evaluation(ev: Evaluator, iteration: int, base: BaseReference | None, out_dir: Path, generate: bool,
                   is_main: bool) -> tuple[dict, np.ndarray | None]:
    """One evaluation: the record (iteration, metrics, paths, seconds) and the contact sheet (rank 0, generations
    only). Every rank computes; only `is_main` writes under out_dir/iter_N/."""
    t0 = time.perf_counter()
    record: dict[str, Any] = {"iteration": int(iteration), **ev.validation_loss()}
    base_metrics = base.metrics if base is not None else None
    if base_metrics:
        record["val/loss_base"] = base_metrics["val/loss"]
        record["val/delta_loss"] = record["val/loss"] - base_metrics["val/loss"]
    sheet = None
    if generate:
        gen, videos = ev.generations()
        record.update(gen)
        if base_metrics and "val/psnr" in base_metrics:
            for name in ("psnr", "ssim"):
                record[f"val/{name}_base"] = base_metrics[f"val/{name}"]
                record[f"val/delta_{name}"] = gen[f"val/{name}"] - base_metrics[f"val/{name}"]
            if record["val/delta_psnr"] == 0 and record["val/delta_ssim"] == 0:
                log.warning(f"Validation at iteration {iteration}: the held-out generations score exactly as the "
                            "base model's (Δ PSNR = Δ SSIM = 0): the adapter changes nothing. Check the learning "
                            "rate, the LoRA targets and that lora_B leaves zero (docs/troubleshooting.md)")  # fmt: skip
        if is_main:
            folder = Path(out_dir) / f"iter_{iteration:09d}"
            paths = [write_mp4(folder / f"{stem}.mp4", frames, ev.s.fps) for stem, _, frames in videos]
            groups = []
            for k, (stem, truth, frames) in enumerate(videos):
                rows = [("truth", truth)]
                base_frames = base.base_frames(k, truth) if base is not None else None
                rows += [("base", base_frames)] if base_frames is not None else []
                groups.append((stem, [*rows, (f"it {iteration}", frames)]))
            sheet = contact_sheet(folder / "contact_sheet.png", groups)
            record["paths"] = {"videos": paths, "contact_sheet": str(folder / "contact_sheet.png")}
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record, sheet


def metrics_plot(path: Path, records: list[dict], keys: tuple[str, ...] = ("val/loss", "val/psnr", "val/ssim"),
                 title: str = "") -> Path:
    """One panel per metric against iteration (matplotlib when installed, else Pillow); base values dashed."""
    panels = [(k, [(r["iteration"], r[k]) for r in records if isinstance(r.get(k), float) and math.isfinite(r[k])])
              for k in keys]  # fmt: skip
    panels = [(k, pts, next((r[f"{k}_base"] for r in records if f"{k}_base" in r), None)) for k, pts in panels if pts]
    if not panels:
        raise ValueError("metrics_plot: no finite values to plot")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _pil_plot(path, panels, title)
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3), squeeze=False)
    for ax, (key, pts, base) in zip(axes[0], panels):
        ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", label="current")
        if base is not None:
            ax.axhline(base, linestyle="--", color="grey", label="base")
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _pil_plot(path: Path, panels: list, title: str) -> Path:
    from PIL import Image, ImageDraw

    pw, ph, m = 320, 220, 44
    img = Image.new("RGB", (pw * len(panels), ph + 20), "white")
    draw = ImageDraw.Draw(img)
    draw.text((4, 2), title, fill="black")
    for n, (key, pts, base) in enumerate(panels):
        ox, values = n * pw, [y for _, y in pts] + ([base] if base is not None else [])
        x0, x1 = min(x for x, _ in pts), max(max(x for x, _ in pts), min(x for x, _ in pts) + 1)
        y0, y1 = min(values), max(max(values), min(values) + 1e-9)
        pad = 0.08 * (y1 - y0)  # lines at the extremes (often the base) stay off the frame
        y0, y1 = y0 - pad, y1 + pad

        def px(x: float, y: float, ox: int = ox, x0: float = x0, x1: float = x1, y0: float = y0,
               y1: float = y1) -> tuple[float, float]:  # fmt: skip
            return ox + m + (x - x0) / (x1 - x0) * (pw - m - 10), 20 + ph - m + (y0 - y) / (y1 - y0) * (ph - m - 20)

        draw.rectangle([ox + m, 40, ox + pw - 10, 20 + ph - m], outline="black")
        draw.text((ox + m, 24), key, fill="black")
        for y in (y0, y1):
            draw.text((ox + 2, px(x0, y)[1] - 6), f"{y:.4g}", fill="black")
        for x in (x0, x1):
            draw.text((px(x, y0)[0] - 8, 20 + ph - m + 4), f"{x:g}", fill="black")
        if base is not None:
            draw.line([px(x0, base), px(x1, base)], fill=(150, 150, 150), width=2)
            draw.text((px(x0, base)[0] + 4, px(x0, base)[1] - 12), f"base {base:.4g}", fill=(120, 120, 120))
        draw.line([px(x, y) for x, y in pts] * (1 if len(pts) > 1 else 2), fill=(30, 90, 200), width=2)
        for x, y in pts:
            cx, cy = px(x, y)
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=(30, 90, 200))
    img.save(path)
    return path


class ValidationMonitor(Monitor):
    """Runs `run_evaluation` at every multiple of validation_iter (after that iteration's checkpoint is saved),
    appends eval.jsonl, updates best_checkpoint.txt and asks the loop to stop after `patience` evaluations
    without a better `best_metric`. Built on every rank (all of them compute); only rank 0 writes."""

    def __init__(self, ctx: MonitorContext, evaluator: Evaluator, settings: ValidationSettings,
                 tensorboard: bool = True) -> None:
        self.ctx, self.ev, self.s = ctx, evaluator, settings
        self.log_path = Path(ctx.job_dir) / EVAL_LOG
        self.out_dir = Path(ctx.job_dir) / "evaluation"
        self.ckpt_dir = Path(ctx.job_dir) / "checkpoints"
        self.base = BaseReference(evaluator, self.out_dir / "base", ctx.is_main)
        self.stop = False
        records = read_eval_log(self.log_path)
        # Lines past the checkpoint this run resumed from belong to weights that are gone: they will be redone.
        self.records = [r for r in records if r["iteration"] <= ctx.start_iteration]
        if ctx.is_main and len(self.records) != len(records):
            log.info(f"{self.log_path}: dropping {len(records) - len(self.records)} evaluation(s) past iteration "
                     f"{ctx.start_iteration} (the checkpoint this run resumed from)")  # fmt: skip
            atomic_write_text(self.log_path, "".join(json.dumps(r) + "\n" for r in self.records))
        self.writer = None
        if ctx.is_main and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(ctx.job_dir) / "tensorboard"))

    def prepare(self, is_lora: bool) -> None:
        """The base reference (once per job), then the evaluation a resumed run's own iteration was due."""
        start = self.ctx.start_iteration
        try:
            self.base.prepare(can_compute=is_lora or start == 0, generate=self.s.generate_every > 0)
        except Exception:
            self._failed(start, "the base model's evaluation")
        done = {r["iteration"] for r in self.records}
        if start > 0 and start % self.s.validation_iter == 0 and start not in done:
            self.evaluate(start)

    def after_step(self, iteration: int, saved: bool) -> None:
        if iteration % self.s.validation_iter == 0:
            self.evaluate(iteration)

    def should_stop(self) -> bool:
        return self.stop

    def _failed(self, iteration: int, what: str) -> None:
        if self.s.raise_errors:
            raise
        log.exception(f"Validation failed at iteration {iteration} ({what}); training goes on, the checkpoint is "
                      "saved (trainer.validation.raise_errors=true stops the run instead)")  # fmt: skip

    def evaluate(self, iteration: int) -> dict | None:
        try:
            record, sheet = run_evaluation(self.ev, iteration, self.base, self.out_dir,
                                           self.s.generates_at(iteration), self.ctx.is_main)  # fmt: skip
        except Exception:
            self._failed(iteration, "evaluation")
            return None
        from cosmos_predict2.training.checkpointer import checkpoint_name

        name = checkpoint_name(iteration)
        record["checkpoint"] = name if (self.ckpt_dir / "model" / name).is_file() else None
        self.records.append(record)
        log.info(f"Validation at iteration {iteration}: {_describe(record)} ({record['seconds']:.1f} s)")
        if self.ctx.is_main:
            self._write(record, sheet)
        metric, patience = self.s.best_metric, self.s.patience
        if patience > 0 and record.get(metric) is not None and evaluations_since_best(self.records, metric) >= patience:
            log.warning(f"Early stopping at iteration {iteration}: {metric} has not improved for {patience} "
                        f"evaluation(s) (trainer.validation.patience); best: {self.ckpt_dir / BEST}")  # fmt: skip
            self.stop = True
        return record

    def _write(self, record: dict, sheet: np.ndarray | None) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        best = best_record([r for r in self.records if r.get("checkpoint")], self.s.best_metric)
        if best is not None:
            atomic_write_text(self.ckpt_dir / BEST, best["checkpoint"] + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key.startswith("val/") and isinstance(value, float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, record["iteration"])
            if sheet is not None:
                self.writer.add_image("val/contact_sheet", sheet, record["iteration"], dataformats="HWC")
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def build_validation_monitor(ctx: MonitorContext, options: dict) -> ValidationMonitor:
    """The monitor of `trainer.run_validation=true` (monitors.MONITORS["validation"]); options override
    `trainer.validation.*`."""
    from cosmos_predict2.data.heldout import validation_clips

    cfg, run = ctx.cfg, ctx.run
    settings = ValidationSettings.from_config(cfg.trainer, **options)
    clips = validation_clips(cfg.dataloader_val, cfg.dataloader_train.get("dataset"), run.dataset, settings.max_clips)
    if clips is None or len(clips) == 0:  # composing the config already refuses run_validation without a set
        raise ValueError(f"trainer.run_validation=true but dataloader_val gives no validation clip: "
                         f"{cfg.dataloader_val}")  # fmt: skip
    log.info(f"Validation: {len(clips)} clip(s) ({', '.join(clips.stems[:4])}{' ...' if len(clips) > 4 else ''}) "
             f"every {settings.validation_iter} iterations")  # fmt: skip
    tensorboard = bool(((cfg.trainer.get("callbacks") or {}).get("tensorboard") or {}).get("enabled", True))
    monitor = ValidationMonitor(ctx, Evaluator(run.model, clips, settings), settings, tensorboard)
    monitor.prepare(run.model.is_lora)
    return monitor


__all__ = ["BaseReference", "Evaluator", "ValidationMonitor", "ValidationSettings", "best_record",
           "build_validation_monitor", "contact_sheet", "evaluation_weights", "metrics_plot", "psnr", "read_eval_log",
           "run_evaluation", "sigma_quantiles", "ssim"]
