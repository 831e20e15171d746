"""The embedding API: users of one dataset -> one L2-normalised float32 vector per (user, instruction).

    embedder = UserEmbedder(model, card, tables)
    universal = embedder.embed()                                  # all users, no instruction
    by_instruction = embedder.embed_many(instructions=[None, "Will this user ...", tuned])

An instruction is a text, None (universal) or a `TunedInstruction` (soft tokens, see `tuned.py`);
results are keyed by the instruction objects given. Users are batched by the length of their user
block (less padding) and returned in the order asked. Under several instructions, each batch's user
block runs once per route (prefix reuse, see `model.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from components.ingestion import ContractTables, DatasetCard
from components.modeling.model import Instruction, InstructUE
from components.modeling.profile import build_profiles
from components.modeling.tuned import TunedInstruction


class UnknownUsers(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class UserEmbedder:
    def __init__(self, model: InstructUE, card: DatasetCard, tables: ContractTables):
        self.model, self.card, self.tables = model, card, tables
        self.users = tables.users.set_index("user_id", drop=False)

    def _ids(self, user_ids: Sequence[int] | None) -> list[int]:
        if user_ids is None:
            return self.tables.users["user_id"].astype(int).tolist()
        ids = [int(u) for u in user_ids]
        unknown = sorted(set(ids) - set(self.users.index))
        if unknown:
            raise UnknownUsers(f"{len(unknown)} user id(s) not in dataset {self.card.name!r}: {unknown[:10]}")
        return ids

    def embed(
        self, user_ids: Sequence[int] | None = None, instruction: Instruction = None, **kw
    ) -> np.ndarray:
        """(n_users, dim) float32 in the order of `user_ids` (default: every user of the dataset)."""
        return self.embed_many(user_ids, [instruction], **kw)[instruction]

    @torch.inference_mode()
    def embed_many(
        self,
        user_ids: Sequence[int] | None = None,
        instructions: Sequence[Instruction] = (None,),
        batch_size: int | None = None,
        progress: bool = False,
    ) -> dict[Instruction, np.ndarray]:
        ids = self._ids(user_ids)
        instructions = list(dict.fromkeys(instructions))  # one pass per distinct instruction
        profiles = build_profiles(self.card, self.tables, ids, self.model.config.max_events)
        # longest users first: batches of similar length waste little on padding
        order = sorted(range(len(ids)), key=lambda i: -sum(len(v) for v in profiles[i].events.values()))
        size = batch_size or self.model.config.batch_size
        out = {k: np.zeros((len(ids), self.model.embedding_dim), dtype=np.float32) for k in instructions}
        bar = tqdm(total=len(ids), unit="user", desc="embed", disable=not progress)
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            rows = self.users.loc[[ids[i] for i in idx]].reset_index(drop=True)
            batch = self.model.batch([profiles[i] for i in idx], rows)
            for instruction, vectors in zip(instructions, self.model.embed(batch, instructions), strict=True):
                out[instruction][idx] = vectors.cpu().numpy()
            bar.update(len(idx))
        bar.close()
        return out


def instruction_label(instruction: Instruction) -> str | None:
    """An instruction as an embeddings file names it: its text, null (universal), or `tuned:<task>`."""
    return instruction.label if isinstance(instruction, TunedInstruction) else instruction


def embeddings_table(user_ids: Sequence[int], by_instruction: dict[Instruction, np.ndarray]) -> pa.Table:
    """One row per (user, instruction), instruction by instruction: `user_id`, `instruction` (null:
    universal; `tuned:<task>` for a tuned instruction), `embedding`."""
    frames = []
    for instruction, matrix in by_instruction.items():
        dim = matrix.shape[1]
        frames.append(
            pa.table(
                {
                    "user_id": pa.array(np.asarray(user_ids, dtype=np.int64)),
                    "instruction": pa.array(
                        [instruction_label(instruction)] * len(user_ids), type=pa.string()
                    ),
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dim),
                }
            )
        )
    return pa.concat_tables(frames)


def write_embeddings(
    path: Path, user_ids: Sequence[int], by_instruction: dict[Instruction, np.ndarray]
) -> Path:
    """`embeddings_table` written atomically as zstd parquet."""
    from components.common import parquet_bytes, write_bytes_atomic

    return write_bytes_atomic(Path(path), parquet_bytes(embeddings_table(user_ids, by_instruction)))


def read_embeddings(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()
