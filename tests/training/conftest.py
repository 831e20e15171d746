"""A small synthesised dataset (the synthetic multi-source reader: sequences of several sources plus
tabular attributes) and a model cache for the tiny profile's random models."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def qa_data(tmp_path_factory) -> Path:
    from components.ingestion import ingest, read_dataset
    from components.userqa.synthesize import synthesize
    from components.userqa.writers import TemplateWriter

    root = tmp_path_factory.mktemp("train-data")
    ingest(
        read_dataset("synthetic-multisource", n_users=60, seed=0), root / "data", root / "q", progress=False
    )
    folder = root / "data" / "synthetic-multisource"
    synthesize(folder, TemplateWriter(), progress=False)
    return folder


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-cache")
