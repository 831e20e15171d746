"""Tuned instructions (InstructUE 3.3.3): soft instruction tokens that stand in for a task's manual
instruction, and their file in the model folder.

    tuned = load_tuned(model_dir)["next4_scifi_liked"]
    vectors = UserEmbedder(model, card, tables).embed_many(ids, [None, tuned])[tuned]

The tokens are input embeddings, not token ids: `model.embed` feeds them to the backbone where the
instruction's token embeddings would go, then `<USER>`. They are optimised by
`components.evaluation.tuning.tune_instruction` (the prototype loss, Eq. 6).

File: `tuned_instructions.safetensors` beside the model's weights. One tensor per task, and a small
JSON index in the safetensors header (task, tensor key, the manual instruction it started from, its
TMoLE route, how it was tuned). No pickle; written atomically. The tokens belong to the weights they
were tuned with: `save_model` writes a fresh folder, so saving a model again drops them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from components.modeling.tmole import INSTRUCTION

TUNED_FILE = "tuned_instructions.safetensors"
FORMAT = "instructue-tuned-instructions"
FORMAT_VERSION = "1"


class NoTunedInstruction(KeyError):
    """The model folder has no tuned instruction for a task."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(eq=False)  # hashed by identity: the object is a key of `embed_many`'s result
class TunedInstruction:
    """Soft instruction tokens for one task.

    `tokens` (k, d) replace the instruction's k token embeddings; `init_text` is the manual
    instruction they were initialised from; `route` is the TMoLE task the embedding is routed as (the
    route of `init_text`: the generic `instruction` task, see `InstructUE.inference_task`).
    """

    task: str
    tokens: torch.Tensor
    init_text: str = ""
    route: str = INSTRUCTION
    n_users: int = 0  # few-shot users it was tuned on
    losses: list[float] = field(default_factory=list)  # prototype loss before each step, then the final one

    def __post_init__(self):
        if self.tokens.ndim != 2 or self.tokens.shape[0] == 0:
            raise ValueError(
                f"tuned instruction {self.task!r}: tokens must be a non-empty (k, d) matrix, "
                f"got shape {tuple(self.tokens.shape)}"
            )

    @property
    def label(self) -> str:
        """How embeddings under this instruction are named in an embeddings file."""
        return f"tuned:{self.task}"

    def __repr__(self) -> str:
        return (
            f"TunedInstruction(task={self.task!r}, tokens={tuple(self.tokens.shape)}, route={self.route!r})"
        )


def save_tuned(model_dir: Path, tuned: list[TunedInstruction]) -> Path:
    """Write `tuned` into the model folder's tuned-instruction file, keeping the folder's tuned
    instructions for other tasks (a task tuned again replaces its previous tokens). Atomic."""
    from safetensors.torch import save

    from components.common import write_bytes_atomic

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir} is not a model folder: save the model first")
    names = [t.task for t in tuned]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"save_tuned got several tuned instructions for task(s) {dupes}; pass one per task")
    merged = {**load_tuned(model_dir), **{t.task: t for t in tuned}}
    tensors, index = {}, []
    for k, (task, t) in enumerate(sorted(merged.items())):
        key = f"tuned.{k}"
        tensors[key] = t.tokens.detach().to("cpu", torch.float32).contiguous()
        index.append(
            {
                "task": task,
                "key": key,
                "init_text": t.init_text,
                "route": t.route,
                "n_users": t.n_users,
                "losses": [float(x) for x in t.losses],
            }
        )
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "index": json.dumps(index)}
    return write_bytes_atomic(model_dir / TUNED_FILE, save(tensors, metadata=meta))


def load_tuned(model_dir: Path) -> dict[str, TunedInstruction]:
    """The model folder's tuned instructions by task name (empty when it has none)."""
    from safetensors import safe_open

    path = Path(model_dir) / TUNED_FILE
    if not path.is_file():
        return {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{path} is not a tuned-instruction file of version {FORMAT_VERSION} "
                f"(format {meta.get('format')!r}, version {meta.get('version')!r}); "
                "tune the instructions again"
            )
        out = {}
        for entry in json.loads(meta["index"]):
            out[entry["task"]] = TunedInstruction(
                task=entry["task"],
                tokens=f.get_tensor(entry["key"]),
                init_text=entry["init_text"],
                route=entry["route"],
                n_users=int(entry["n_users"]),
                losses=[float(x) for x in entry["losses"]],
            )
    return out


def tuned_for(model_dir: Path, tasks: list[str]) -> list[TunedInstruction]:
    """The folder's tuned instructions for `tasks`, in that order; a clear error for a missing one."""
    saved = load_tuned(model_dir)
    missing = [t for t in tasks if t not in saved]
    if missing:
        have = sorted(saved) or "none"
        raise NoTunedInstruction(
            f"model folder {model_dir} has no tuned instruction for task(s) {missing} (it has: {have}); "
            "tune them with `instructue evaluate` on this model, or use the manual instruction (--task)"
        )
    return [saved[t] for t in tasks]
