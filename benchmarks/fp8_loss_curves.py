"""What fp8 storage of the frozen base weights does to LoRA training (docs/memory.md, issue 14): the demo's LoRA run
(the pretrained tiny base, the "sks teal robot" clips, the same data order and seeds) with the base kept in bf16,
fp8_e5m2 and fp8_e4m3, loss by loss. Each run is `python -m scripts.train` in its own process, as a user runs it.

    python benchmarks/fp8_loss_curves.py --out_dir outputs/fp8_curves --train_steps 100

Prints step 0's loss difference against the bf16 base (the rounding's effect on the output, before any training),
the mean relative difference over the run, and the mean loss over the last quarter of it; JSON to
OUT_DIR/fp8_loss_curves.json (and $OUT when set).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo import FPS, HEIGHT, NUM_FRAMES, REPO_ROOT, ROBOT_PROMPT, T5_DIR, VAE_DIR, WIDTH  # noqa: E402
from demo.run import CONFIG, TRAIN_SEED, DemoSettings, read_losses, train_overrides  # noqa: E402
from demo.synthetic import write_dataset  # noqa: E402

STORAGES = ("bf16", "fp8_e5m2", "fp8_e4m3")


def run(args: list[str], log: Path) -> None:
    with open(log, "a", encoding="utf-8") as f:
        proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"`python {' '.join(args)}` failed; see {log}")


def prepare_dataset(out: Path, num_clips: int, log: Path) -> Path:
    dataset = out / "dataset"
    if not (dataset / "t5_xxl").is_dir():
        write_dataset(dataset, "robot", TRAIN_SEED, num_clips, num_frames=NUM_FRAMES, fps=FPS, write_metas=False)
        run(["-m", "scripts.get_t5_embeddings_from_cosmos_nemo_assets", "--dataset_path", str(dataset), "--prompt",
             ROBOT_PROMPT, "--t5_path", str(T5_DIR)], log)  # fmt: skip
        run(["-m", "scripts.cache_latents", "--dataset_path", str(dataset), "--num_frames", str(NUM_FRAMES),
             "--height", str(HEIGHT), "--width", str(WIDTH), "--tokenizer_path", str(VAE_DIR), "--device", "cpu"],
            log)  # fmt: skip
    return dataset


def train(settings: DemoSettings, dataset: Path, out: Path, storage: str, log: Path) -> list[float]:
    job_root = out / "jobs" / storage
    overrides = [o for o in train_overrides(settings, dataset, job_root) if not o.startswith("trainer.validation")]
    overrides = [o for o in overrides if not o.startswith(("dataloader_val", "trainer.run_validation"))]
    overrides += ["trainer.run_validation=false", f"model.config.base_weight_storage={storage}",
                  "model.config.activation_checkpointing=full"]  # fmt: skip  (fp8 storage needs checkpointed blocks)
    run(["-m", "scripts.train", f"--config={CONFIG}", "--", *overrides], log)
    job_dir = next((job_root / "posttraining").glob("*/demo_teal_robot"))
    return read_losses(job_dir / "stdout.log")[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out_dir", default="outputs/fp8_curves")
    ap.add_argument("--train_steps", type=int, default=100)
    ap.add_argument("--num_train_clips", type=int, default=16)
    args = ap.parse_args()
    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.log"
    settings = DemoSettings(train_steps=args.train_steps, num_train_clips=args.num_train_clips)
    dataset = prepare_dataset(out, args.num_train_clips, log)
    curves = {}
    for storage in STORAGES:
        if (out / "jobs" / storage).exists():
            sys.exit(f"{out / 'jobs' / storage} exists (an earlier run's job): choose another --out_dir")
        curves[storage] = train(settings, dataset, out, storage, log)
    base = curves["bf16"]
    rows = []
    for storage, losses in curves.items():
        quarter = losses[-max(1, len(losses) // 4):]
        rel = [abs(a / b - 1) for a, b in zip(losses, base)]
        rows.append({"storage": storage, "iterations": len(losses), "step0_loss": losses[0],
                     "step0_rel_diff": abs(losses[0] / base[0] - 1), "mean_rel_diff": statistics.mean(rel),
                     "last_quarter_mean_loss": statistics.mean(quarter)})  # fmt: skip
    result = {"train_steps": args.train_steps, "batch_size": settings.batch_size, "lr": settings.lr,
              "lora_rank": settings.lora_rank, "rows": rows, "curves": curves}  # fmt: skip
    for folder in filter(None, (str(out), os.environ.get("OUT"))):
        Path(folder, "fp8_loss_curves.json").write_text(json.dumps(result, indent=2))
    print(f"{'storage':<10} {'step-0 loss':>12} {'vs bf16':>8} {'mean |rel diff|':>16} {'last-quarter loss':>18}")
    for r in rows:
        print(f"{r['storage']:<10} {r['step0_loss']:>12.5f} {r['step0_rel_diff']:>8.2%} {r['mean_rel_diff']:>16.2%} "
              f"{r['last_quarter_mean_loss']:>18.5f}")  # fmt: skip


if __name__ == "__main__":
    main()
