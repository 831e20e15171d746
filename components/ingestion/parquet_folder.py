"""Reader `parquet`: a folder of the user's own that already follows the data contract.

The folder holds `schema.yaml` (the dataset card) and `users.parquet`, `events.parquet`,
`labels.parquet`, `cutoffs.parquet`. They are read whole, as one chunk; validation then treats them
exactly like the built-in readers' output.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from components.ingestion.card import DatasetCard
from components.ingestion.contract import CARD_FILENAME, ContractTables, RawDataset, Table
from components.ingestion.validation import ContractError


class ParquetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: Path


def _inside(path: Path, folder: Path) -> Path:
    """`path`, refused when it (or a link on its way) leads outside `folder`: a dataset is what its
    folder holds, and a link to a file elsewhere would version and ingest someone else's data."""
    target = path.resolve()
    if not target.is_relative_to(folder.resolve()):
        raise ContractError(
            f"{path} is a link to {target}, outside the dataset folder {folder}; "
            "copy the file into the folder instead"
        )
    return path


def _read(path: Path):
    if not path.exists():
        raise ContractError(f"{path} is missing: a contract folder needs {[t.filename for t in Table]}")
    try:
        return pq.read_table(path).to_pandas()
    except Exception as e:  # pyarrow raises several types for truncated or foreign files
        raise ContractError(f"{path} is not a readable parquet file (truncated or corrupt?): {e}") from None


def read_parquet_folder(options: ParquetOptions) -> RawDataset:
    folder = Path(options.path)
    if not folder.is_dir():
        raise ContractError(f"dataset folder {folder} does not exist")
    card = DatasetCard.load(_inside(folder / CARD_FILENAME, folder))
    tables = ContractTables(**{t.value: _read(_inside(folder / t.filename, folder)) for t in Table})
    return RawDataset(
        card=card,
        chunks=iter([tables]),
        n_users_hint=len(tables.users),
        provenance={"reader": "parquet", "source_folder": folder.name},
    )
