"""Training examples from UserQA records, and a sampler whose position is part of a checkpoint.

Every record `(user, instruction, answer)` feeds both branches (InstructUE 3.3.2): an embedding-branch
example (profile + instruction -> `<USER>`, contrasted with the answer) and a generative-branch
example (profile + instruction + `<USER>` -> answer tokens).

The sampler walks a seeded permutation per epoch; its state is `(epoch, cursor)`, so a resumed run
draws exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.modeling import UNIVERSAL

USERQA_FILE = "userqa.parquet"


@dataclass(frozen=True)
class Example:
    user_id: int
    instruction: str | None  # None: the general (universal) record
    answer: str
    task_id: int
    family: str


def task_name(example: Example) -> str:
    """The example's task in TMoLE's registry and S2Sched's pools: its UserQA family, or
    `universal` for the general record without an instruction."""
    return UNIVERSAL if example.instruction is None else example.family


class MissingUserQA(FileNotFoundError):
    pass


def load_examples(
    data_dir: Path, families: list[str] | None = None, max_records: int | None = None, seed: int = 0
) -> list[Example]:
    """The UserQA records of a dataset folder as examples (records with an empty answer dropped).

    Raises:
        MissingUserQA: the dataset has no `userqa.parquet` (run `instructue synthesize` first).
        ValueError: `families` names a family the file does not hold, or nothing is left.
    """
    path = Path(data_dir) / USERQA_FILE
    if not path.is_file():
        raise MissingUserQA(
            f"{path} is missing: synthesize UserQA first (`instructue synthesize {Path(data_dir).name}`)"
        )
    cols = ["user_id", "family", "task_id", "instruction", "answer"]
    df = pd.read_parquet(path, columns=cols)
    if families is not None:
        unknown = sorted(set(families) - set(df["family"]))
        if unknown:
            raise ValueError(f"families {unknown} are not in {path}; it has {sorted(set(df['family']))}")
        df = df[df["family"].isin(families)]
    df = df[df["answer"].fillna("").str.strip() != ""]
    if max_records is not None and len(df) > max_records:
        df = df.sample(n=max_records, random_state=seed).sort_index()
    if len(df) < 2:
        raise ValueError(f"{path}: {len(df)} usable record(s) after filtering; training needs at least 2")
    instr = df["instruction"].astype(object).where(df["instruction"].notna(), None)
    return [
        Example(int(u), i if i else None, str(a), int(t), str(f))
        for u, i, a, t, f in zip(df["user_id"], instr, df["answer"], df["task_id"], df["family"], strict=True)
    ]


class Sampler:
    """Indices into the examples, epoch by epoch, each epoch a permutation seeded by (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("the sampler needs at least one example")
        self.n, self.seed = n, seed
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            room = min(k - len(out), self.n - self.cursor)
            out += self._order[self.cursor : self.cursor + room].tolist()
            self.cursor += room
            if self.cursor == self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
        return out

    def state_dict(self) -> dict:
        return {"n": self.n, "seed": self.seed, "epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n or state["seed"] != self.seed:
            raise ValueError(
                f"sampler state is for {state['n']} examples / seed {state['seed']}, "
                f"this run has {self.n} / seed {self.seed}: the training data changed"
            )
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._permutation(self.epoch)

    @property
    def position(self) -> float:
        """Epochs done, fractional."""
        return self.epoch + self.cursor / self.n


def shard(indices: list[int], micro_batch: int, accum: int, world: int, rank: int) -> list[list[int]]:
    """This process's micro-batches of one optimizer step's global draw.

    The draw holds `micro_batch * accum * world` indices; micro-batch m of process r is the slice
    `(m * world + r) * micro_batch` onward, so the set a step trains on does not depend on timing.
    """
    return [
        indices[(m * world + rank) * micro_batch : (m * world + rank + 1) * micro_batch] for m in range(accum)
    ]
