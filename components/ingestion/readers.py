"""The reader registry: dataset name -> options model and reader function.

raw = read_dataset("synthetic-multisource", n_users=10_000, noise=0.3)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from components.ingestion.contract import RawDataset


@dataclass(frozen=True)
class ReaderSpec:
    name: str
    module: str  # imported on first use, so one reader's dependencies never slow another
    options_class: str
    function: str
    summary: str

    @property
    def options(self) -> type[BaseModel]:
        return getattr(importlib.import_module(self.module), self.options_class)

    def read(self, options: BaseModel) -> RawDataset:
        return getattr(importlib.import_module(self.module), self.function)(options)


_PKG = "components.ingestion"
READERS: dict[str, ReaderSpec] = {
    s.name: s
    for s in (
        ReaderSpec("movielens-100k", f"{_PKG}.movielens", "MovieLensOptions", "read_movielens",
                   "real MovieLens-100k (embedded in the recbole wheel, or a local folder: path=...)"),
        ReaderSpec("synthetic-multisource", f"{_PKG}.synthetic", "SyntheticOptions", "read_synthetic",
                   "seeded multi-source generator with latent traits and a noise share"),
        ReaderSpec("parquet", f"{_PKG}.parquet_folder", "ParquetOptions", "read_parquet_folder",
                   "your own folder that follows the data contract (path=...)"),
    )
}  # fmt: skip


class UnknownReader(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def reader(name: str) -> ReaderSpec:
    if name not in READERS:
        raise UnknownReader(f"unknown dataset reader {name!r}; choose one of {sorted(READERS)}")
    return READERS[name]


def parse_options(name: str, options: dict[str, Any]) -> BaseModel:
    """Validate reader options once, at the edge; all problems in one message."""
    spec = reader(name)
    try:
        return spec.options.model_validate(options)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '?'}: {err['msg']}" for err in e.errors())
        raise ValueError(f"invalid options for reader {name!r}: {problems}") from None


def read_dataset(name: str, **options: Any) -> RawDataset:
    return reader(name).read(parse_options(name, options))
