"""Command-line entry of one training process; `torchrun` / `accelerate launch` start several.

    python -m components.training.launch --profile tiny --data data/movielens-100k --run-dir runs/t
    torchrun --nproc_per_node 2 -m components.training.launch --profile tiny --data ... --run-dir ...
    accelerate launch --config_file infra/training/accelerate-ddp.yaml -m components.training.launch ...

`instructue train` (flows/) calls the same `train` function in-process for one process and this
module through torchrun for several. Rank 0 writes `result.json` into the run folder (`trainer.py`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m components.training.launch", description=__doc__.split("\n")[0]
    )
    p.add_argument("--profile", required=True, help="tiny, quick, paper, or a YAML file")
    p.add_argument("--data", required=True, type=Path, help="an ingested, synthesised dataset folder")
    p.add_argument("--run-dir", required=True, type=Path, help="checkpoints and the final model go here")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="key=value (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument("--cache-dir", type=Path, default=None, help="model cache (default $INSTRUCTUE_CACHE)")
    p.add_argument(
        "--tracking-root", type=Path, default=None,
        help="log to the MLflow store configured under this project root (default: no tracking)",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from components.training.config import load_profile
    from components.training.tracking import MlflowTracker
    from components.training.trainer import train

    config = load_profile(args.profile, args.overrides)
    tracker = None
    if args.tracking_root is not None and int(os.environ.get("RANK", "0")) == 0:  # only rank 0 logs
        tracker = MlflowTracker.from_settings(args.tracking_root)
    train(config, args.data, args.run_dir, cache_dir=args.cache_dir, tracker=tracker,
                   resume=args.resume, progress=not args.no_progress)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
