"""Evaluate saved checkpoints of a training job offline, with the evaluation of training (docs/guide.md "Validation").

    python -m scripts.evaluate --job checkpoints/posttraining/video2world_lora/NAME
    python -m scripts.evaluate --job JOB --checkpoints iter_000001000.pt iter_000002000.pt --no_generate

Reads JOB/config.yaml (the run's own settings: model, dataset, `dataloader_val`, `trainer.validation`), rebuilds
the model and the validation set, loads each checkpoint's model file (adapters and EMA) and computes the numbers
the training loop writes to JOB/eval.jsonl: the same for the same checkpoint (bit-identical on the same device).
Writes to --out (default JOB/evaluation/offline): eval.jsonl, table.md (best checkpoint by
`trainer.validation.best_metric` marked), metrics.png, and each checkpoint's mp4s and contact sheet. Run from the
folder training ran from (the config's relative paths). The base model's generations are read from
JOB/evaluation/base/ when training made them, else computed (LoRA).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", type=Path, required=True, help="the job folder (holds config.yaml, checkpoints/)")
    parser.add_argument("--checkpoints", nargs="*", default=None,
                        help="model file names in JOB/checkpoints/model (default: all)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="output folder (default JOB/evaluation/offline)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    parser.add_argument("--no_generate", action="store_true", help="validation loss only (no generations)")
    return parser.parse_args(argv)


def table(records: list[dict], best_metric: str) -> str:
    from cosmos_predict2.training.evaluation import best_record

    cols = ["val/loss", "val/psnr", "val/ssim", "val/delta_psnr", "val/delta_ssim"]
    best = best_record(records, best_metric)
    lines = ["| checkpoint | " + " | ".join(c.removeprefix("val/") for c in cols) + " |",
             "|---|" + "---|" * len(cols)]  # fmt: skip
    for r in records:
        cells = [f"{r[c]:.4f}" if isinstance(r.get(c), float) else "" for c in cols]
        mark = f" (best {best_metric})" if r is best else ""
        lines.append(f"| {r['checkpoint']}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate_job(job: Path, names: list[str] | None = None, out: Path | None = None, device: str = "auto",
                 generate: bool = True) -> list[dict]:  # fmt: skip
    from omegaconf import OmegaConf

    from cosmos_predict2.configs.lazy import instantiate
    from cosmos_predict2.data.heldout import validation_clips
    from cosmos_predict2.io import atomic_write_text, safe_load
    from cosmos_predict2.parallel import resolve_device
    from cosmos_predict2.training.evaluation import (
        BaseReference,
        Evaluator,
        ValidationSettings,
        metrics_plot,
        run_evaluation,
    )

    job, out = Path(job), Path(out) if out else Path(job) / "evaluation" / "offline"
    cfg = OmegaConf.load(job / "config.yaml")
    model_dir = job / "checkpoints" / "model"
    names = names or sorted(p.name for p in model_dir.glob("iter_*.pt"))
    if not names:
        raise FileNotFoundError(f"{model_dir}: no checkpoint to evaluate")
    model = instantiate(cfg.model)
    model.setup(resolve_device(device), seed=int(cfg.trainer.seed))
    model.init_ema()
    settings = ValidationSettings.from_config(cfg.trainer)
    dataset = instantiate(cfg.dataloader_train.dataset)
    clips = validation_clips(cfg.dataloader_val, cfg.dataloader_train.dataset, dataset, settings.max_clips)
    if clips is None:
        raise ValueError(f"{job}/config.yaml has no validation set (dataloader_val=mock): pass dataloader_val=heldout "
                         "when training, or edit dataloader_val in the config")  # fmt: skip
    ev = Evaluator(model, clips, settings)
    base = BaseReference(ev, job / "evaluation" / "base", is_main=False)
    if generate and not base.load() and model.is_lora:
        base = BaseReference(ev, out / "base", is_main=True)
        base.prepare(can_compute=True, generate=True)
    records = []
    for name in names:
        path = model_dir / name
        model.load_model_file_state(safe_load(path, what="model checkpoint"), str(path))
        iteration = int(name.removeprefix("iter_").removesuffix(".pt"))
        record, _ = run_evaluation(ev, iteration, base, out, generate, is_main=True)
        record["checkpoint"] = name
        records.append(record)
        print(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val/")
                                      and "sigma" not in k), flush=True)  # fmt: skip
    atomic_write_text(out / "eval.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_text(out / "table.md", table(records, settings.best_metric))
    metrics_plot(out / "metrics.png", records, title=str(job.name))
    print(f"Wrote {out / 'table.md'}, {out / 'metrics.png'}, {out / 'eval.jsonl'}")
    return records


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        evaluate_job(args.job, args.checkpoints, args.out, args.device, not args.no_generate)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
