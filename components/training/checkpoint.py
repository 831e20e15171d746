"""Checkpoints that a killed run resumes from exactly, with no pickle anywhere.

    <run>/checkpoints/step-00000050/
        model.json, trainable.safetensors, tokenizer/   a model folder `load_model` reads
        optimizer.safetensors                          the optimizer's per-parameter tensors
        rng-<rank>.safetensors                         each process's torch (and CUDA) RNG state
        trainer.json                                   step, sampler, scheduler, optimizer groups,
                                                       python/numpy RNG, tracking run id, config

A checkpoint is written into a hidden temporary folder and renamed into place; only folders named
`step-<n>` that hold `trainer.json` count, so a run killed mid-write leaves nothing half-read.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from components.modeling import WEIGHTS_FILE, InstructUE, load_trainable, write_model_files

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer.json"
OPTIMIZER_FILE = "optimizer.safetensors"
_NAME = re.compile(r"^step-(\d{8})$")


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:08d}"


def staging_dir(run_dir: Path, step: int) -> Path:
    """The temporary folder all processes write into before rank 0 renames it (a fixed name so
    every process agrees on it without talking)."""
    return Path(run_dir) / CHECKPOINTS / f".step-{step:08d}.partial"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


# -- optimizer state as tensors + JSON ------------------------------------------------------------
def optimizer_tensors(state: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split `optimizer.state_dict()` into flat tensors and JSON-able parameter groups."""
    tensors = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{idx}.{key}"] = t.detach().cpu().clone()  # never alias the live state
    return tensors, [dict(g) for g in state["param_groups"]]


def optimizer_state(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = t
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


# -- RNG --------------------------------------------------------------------------------------------
def rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_tensors(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])


def host_rng() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
    }


def set_host_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, g = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, g))


# -- write / read -------------------------------------------------------------------------------------
def write_rank_rng(staging: Path, rank: int) -> None:
    from safetensors.torch import save_file

    save_file(rng_tensors(), str(staging / f"rng-{rank}.safetensors"))


def write_checkpoint(
    staging: Path, final: Path, model: InstructUE, optimizer_state_dict: dict, trainer: dict
) -> Path:
    """Rank 0's part: the model folder, optimizer and trainer state into `staging`, then the rename.

    Other processes must have written their `rng-<rank>` files into `staging` before this runs.
    """
    from safetensors.torch import save_file

    from components.common import replace_dir

    write_model_files(model, staging)
    tensors, groups = optimizer_tensors(optimizer_state_dict)
    save_file(tensors, str(staging / OPTIMIZER_FILE))
    (staging / STATE_FILE).write_text(
        json.dumps({**trainer, "optimizer_groups": groups}, indent=1) + "\n", encoding="utf-8"
    )
    replace_dir(staging, final)
    return final


@dataclass
class Restored:
    folder: Path
    trainer: dict
    optimizer: dict


def read_checkpoint(folder: Path, model: InstructUE, rank: int) -> Restored:
    """Load the trainable weights into `model`, this process's RNG, and return the rest."""
    from safetensors.torch import load_file

    weights = load_file(str(folder / WEIGHTS_FILE))
    missing, unexpected = load_trainable(model, weights)
    if missing or unexpected:
        raise ValueError(f"{folder}: weights do not match the model (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]})")  # fmt: skip
    trainer = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    rng = folder / f"rng-{rank}.safetensors"
    if not rng.is_file():
        raise ValueError(f"{folder} has no RNG state for process {rank}: resume with the same world size")
    set_rng_tensors(load_file(str(rng)))
    set_host_rng(trainer["host_rng"])
    optimizer = optimizer_state(load_file(str(folder / OPTIMIZER_FILE)), trainer.pop("optimizer_groups"))
    return Restored(folder, trainer, optimizer)


def prune(run_dir: Path, keep: int) -> None:
    """Drop all but the newest `keep` complete checkpoints, and stale partial folders."""
    for old in complete_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
