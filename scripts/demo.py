"""The CPU demo: LoRA post-training of the tiny Video2World model on the "sks teal robot", end to end.

    make demo                          # installs into .venv first, then runs this
    python -m scripts.demo [--quick]   # --quick: the shortened version the tests run

Outputs go to outputs/demo/ (dataset, checkpoints, mp4s, contact_sheet.png, loss_curve.png, summary.json) or
--out_dir. The demo marks its folder with a .cosmos_demo_output file and only ever replaces its own outputs: an
existing non-empty folder without that file is refused, never deleted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.run import DemoError, DemoSettings, print_summary, run_demo  # noqa: E402

QUICK = dict(num_train_clips=24, num_heldout=4, train_steps=400, sampling_steps=20)


def main(argv: list[str] | None = None) -> int:
    d = DemoSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", type=Path, default=d.out_dir,
                        help="output folder: an earlier demo run's outputs there are replaced; any other non-empty "
                        "folder is refused, never deleted")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="shortened run (CI): fewer clips, iterations, steps")
    parser.add_argument("--train_steps", type=int, default=None, help=f"LoRA iterations (default {d.train_steps})")
    parser.add_argument("--num_train_clips", type=int, default=None, help=f"default {d.num_train_clips}")
    parser.add_argument("--num_heldout", type=int, default=None, help=f"default {d.num_heldout}")
    parser.add_argument("--sampling_steps", type=int, default=None, help=f"default {d.sampling_steps}")
    parser.add_argument("--guidance", type=float, default=None, help=f"default {d.guidance}")
    parser.add_argument("--seed", type=int, default=None, help=f"sampling seed (default {d.seed})")
    args = parser.parse_args(argv)

    settings = dict(QUICK) if args.quick else {}
    for key in ("train_steps", "num_train_clips", "num_heldout", "sampling_steps", "guidance", "seed"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    s = DemoSettings(out_dir=args.out_dir, **settings)
    print(f"Cosmos-Predict2 LoRA demo on CPU -> {s.out_dir}", flush=True)
    try:
        summary = run_demo(s, echo=lambda m: print(m, flush=True))
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
