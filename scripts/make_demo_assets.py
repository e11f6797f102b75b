"""Re-create the demo's shipped tiny models in assets/demo/ (deterministic, CPU; see assets/demo/README.md).

    python -m scripts.make_demo_assets                 # tiny T5 + tiny VAE + tiny base DiT (about 25 min on 2 cores)
    python -m scripts.make_demo_assets --reuse_vae     # keep assets/demo/tiny_vae, redo the DiT pretraining

The base DiT is pretrained with the real training stack (scripts.get_t5_embeddings, scripts.cache_latents,
scripts.train with experiment=predict2_video2world_training_tiny_example, train_architecture=full).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo import ASSETS_DIR, REPO_ROOT  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", type=Path, default=ASSETS_DIR, help="where the weights go (assets/demo)")
    parser.add_argument("--work_dir", type=Path, default=REPO_ROOT / "outputs" / "demo_assets",
                        help="intermediate files: the shapes dataset, latents, the pretraining job")
    parser.add_argument("--vae_steps", type=int, default=1500)
    parser.add_argument("--vae_from", type=Path, default=None,
                        help="start the VAE from these weights (WORK_DIR/vae_partial.safetensors of a stopped run)")
    parser.add_argument("--dit_steps", type=int, default=3000)
    parser.add_argument("--num_clips", type=int, default=256, help="clips in the shapes pretraining set")
    parser.add_argument("--dit_batch", type=int, default=16)
    parser.add_argument("--reuse_vae", action="store_true", help="keep an existing OUT_DIR/tiny_vae")
    parser.add_argument("--skip_dit", action="store_true", help="stop after the T5 and the VAE")
    args = parser.parse_args(argv)

    from demo.assets import make_assets

    t0 = time.perf_counter()
    report = make_assets(args.out_dir, args.work_dir, vae_steps=args.vae_steps, dit_steps=args.dit_steps,
                         num_clips=args.num_clips, dit_batch=args.dit_batch, reuse_vae=args.reuse_vae,
                         skip_dit=args.skip_dit, vae_from=args.vae_from,
                         log=lambda m: print(m, flush=True))  # fmt: skip
    if not args.skip_dit:
        from demo.assets import write_assets_readme

        command = "python -m scripts.make_demo_assets " + " ".join(sys.argv[1:] if argv is None else argv)
        report["timings_s"]["total_s"] = round(time.perf_counter() - t0, 1)
        print(f"wrote {write_assets_readme(args.out_dir, report, command.strip())}")
    print(json.dumps(report, indent=2))
    print(f"done in {time.perf_counter() - t0:.0f} s; assets in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
