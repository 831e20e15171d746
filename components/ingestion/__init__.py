"""Ingestion: readers, the data contract, validation, quarantine and DVC versioning of `data/`."""

from components.ingestion.card import CardError, DatasetCard, FeatureType, SourceKind
from components.ingestion.contract import (
    CARD_FILENAME,
    ContractTables,
    RawDataset,
    Split,
    Table,
    in_validation_holdout,
    labelled_training_users,
    profile_mask,
    read_tables,
)
from components.ingestion.ingest import IngestSummary, TooManyBadRows, ingest
from components.ingestion.readers import READERS, UnknownReader, parse_options, read_dataset
from components.ingestion.synthetic import SyntheticOptions, read_synthetic
from components.ingestion.validation import ContractError
from components.ingestion.versioning import VersioningError, ensure_dvc_repo, pull, push, set_remote, status

__all__ = [
    "CARD_FILENAME",
    "CardError",
    "ContractError",
    "ContractTables",
    "DatasetCard",
    "FeatureType",
    "IngestSummary",
    "READERS",
    "RawDataset",
    "SourceKind",
    "Split",
    "in_validation_holdout",
    "labelled_training_users",
    "SyntheticOptions",
    "Table",
    "TooManyBadRows",
    "UnknownReader",
    "VersioningError",
    "ensure_dvc_repo",
    "ingest",
    "parse_options",
    "profile_mask",
    "pull",
    "push",
    "read_dataset",
    "read_synthetic",
    "read_tables",
    "set_remote",
    "status",
]
