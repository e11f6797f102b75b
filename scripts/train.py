"""Train a Cosmos-Predict2 Video2World model (LoRA or full fine-tuning).

    torchrun --nproc_per_node=8 -m scripts.train --config=cosmos_predict2/configs/base/config.py -- \
        experiment=predict2_video2world_lora_training_2b_cosmos_nemo_assets [key.path=value ...]
    python -m scripts.train --config=cosmos_predict2/configs/base/config.py -- experiment=NAME    (one process)
    python -m scripts.train --config=... --dryrun -- experiment=NAME    (print the resolved config and exit)

Rerunning the same command resumes from JOB/checkpoints/latest_checkpoint.txt.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config file, e.g. cosmos_predict2/configs/base/config.py")
    parser.add_argument("--dryrun", action="store_true", help="print the resolved config and the parameter counts")
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
        from cosmos_predict2.training.model import parse_model_config

        parse_model_config(cfg.model.config)  # validate the model fields without building anything
        return 0
    from cosmos_predict2.training.trainer import train

    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
