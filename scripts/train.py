"""Train a Cosmos-Predict2 Video2World model (LoRA or full fine-tuning).

    torchrun --nproc_per_node=8 -m scripts.train --config=cosmos_predict2/configs/base/config.py -- \
        experiment=predict2_video2world_lora_training_2b_cosmos_nemo_assets [key.path=value ...]
    python -m scripts.train --config=cosmos_predict2/configs/base/config.py -- experiment=NAME    (one process)
    python -m scripts.train --config=... --dryrun -- experiment=NAME    (config + parameter counts, reads no weight)

Rerunning the same command resumes from JOB/checkpoints/latest_checkpoint.txt.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file, e.g. cosmos_predict2/configs/base/config.py")
    parser.add_argument("--dryrun", action="store_true",
                        help="print the resolved config and the parameter counts of the network with its LoRA "
                             "adapters (built on the meta device: no weight is read, nothing is allocated), then exit")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="Hydra overrides after `--`: experiment=NAME k=v")
    args = parser.parse_args(argv)
    args.opts = [o for o in args.opts if o != "--"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cosmos_predict2.configs.compose import ConfigError, compose_config, to_yaml

    try:
        cfg = compose_config(args.config, args.opts)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dryrun:
        print(to_yaml(cfg))
        return dryrun(cfg)
    from cosmos_predict2.training.trainer import train

    train(cfg)
    return 0


def dryrun(cfg) -> int:
    """Build the network on the meta device, apply LoRA, print the guide's parameter lines; no weight is read."""
    from cosmos_predict2.configs.lazy import instantiate
    from cosmos_predict2.lora import LoraConfigError

    try:
        model = instantiate(cfg.model)  # validates model.config
        lines = model.parameter_report()  # fails on LoRA targets that match nothing
    except (LoraConfigError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
