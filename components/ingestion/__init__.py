"""Ingestion: readers, the data contract, validation, quarantine and DVC versioning of `data/`."""

from components.ingestion.card import DatasetCard
from components.ingestion.contract import ContractTables, RawDataset, Split, Table, read_tables
from components.ingestion.ingest import IngestSummary, TooManyBadRows, ingest
from components.ingestion.readers import read_dataset
from components.ingestion.validation import ContractError

__all__ = [
    "ContractError",
    "ContractTables",
    "DatasetCard",
    "IngestSummary",
    "RawDataset",
    "Split",
    "Table",
    "TooManyBadRows",
    "ingest",
    "read_dataset",
    "read_tables",
]
