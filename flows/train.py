"""The training flow: a synthesised dataset -> a trained model folder, tracked in MLflow.

    instructue train --profile quick --dataset movielens-100k
    instructue train --profile tiny --dataset movielens-100k --processes 2     # two gloo processes

One process trains in the flow's own process; several run under `torchrun` (the same code, see
`components/training/launch.py`). A retry of the task resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.runtime import task_run

from components.training import RESULT_FILE, MlflowTracker, load_profile, train
from flows.settings import Paths


def torchrun_command(processes: int, args: list[str]) -> list[str]:
    port = str(29500 + random.randint(1, 5000))  # several local runs must not share a rendezvous port
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", port, "-m", "components.training.launch", *args]  # fmt: skip


@task(name="train-model", retries=1, retry_delay_seconds=5)
def train_task(
    profile: str, overrides: list[str], data_dir: Path, run_dir: Path, resume: bool, processes: int,
    tracking_root: Path | None,
) -> dict:  # fmt: skip
    resume = resume or (task_run.run_count or 1) > 1  # a retry continues from the last checkpoint
    config = load_profile(profile, overrides)  # validated here, before any process starts
    if processes == 1:
        tracker = MlflowTracker.from_settings(tracking_root) if tracking_root else None
        return train(config, data_dir, run_dir, tracker=tracker, resume=resume).to_dict()
    args = ["--profile", profile, "--data", str(data_dir), "--run-dir", str(run_dir)]
    args += [a for o in overrides for a in ("--set", o)]
    args += ["--resume"] if resume else []
    args += ["--tracking-root", str(tracking_root)] if tracking_root else []
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(torchrun_command(processes, args), env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun with {processes} processes exited {done.returncode}; see its output")
    return json.loads((run_dir / RESULT_FILE).read_text(encoding="utf-8"))


@flow(name="train")
def train_flow(
    dataset: str = "movielens-100k",
    profile: str = "quick",
    overrides: list[str] | None = None,
    run_dir: str | None = None,
    resume: bool = False,
    processes: int = 1,
    track: bool = True,
    root: str | None = None,
) -> dict:
    paths = Paths.resolve(Path(root) if root else None)
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    folder = Path(run_dir) if run_dir else paths.runs / f"{dataset}-{Path(profile).stem}"
    result = train_task(profile, list(overrides or []), paths.data / dataset, folder, resume, processes,
                        paths.root if track else None)  # fmt: skip
    get_run_logger().info("model folder: %s", result["model_dir"])
    return result
