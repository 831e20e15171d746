"""Data Docs of a published version: a GX Checkpoint's site a reviewer opens, replaced whole."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from components.ingestion import ingest
from components.ingestion.contract import Table
from components.ingestion.data_docs import build_data_docs
from tests.conftest import as_raw, make_tables

pytestmark = pytest.mark.integration


def _local_pages(index: Path) -> list[Path]:
    """The site pages the index links to (suites as <a href>, validation results in its table data)."""
    text = index.read_text(encoding="utf-8")
    found = re.findall(r"(?:expectations|validations)/[^\"'\s<>]+?\.html", text)
    return sorted({index.parent / href for href in found})


def test_an_ingest_builds_a_site_whose_pages_exist_and_name_every_table(tiny_card, tmp_path):
    summary = ingest(as_raw(tiny_card, make_tables(tiny_card)), tmp_path / "data", tmp_path / "q",
                     progress=False, docs_root=tmp_path / "docs")  # fmt: skip
    index = Path(summary.data_docs)
    assert index == tmp_path / "docs" / tiny_card.name / "index.html" and index.is_file()
    assert f"data docs (GX validation of the published tables): {index}" in summary.to_text()
    pages = _local_pages(index)
    assert pages and all(p.is_file() for p in pages)
    for table in Table:  # a suite page and a validation page per table; the validation passed
        assert index.parent / "expectations" / tiny_card.name / f"{table.value}.html" in pages
        (result,) = [p for p in pages if p.parts[-6:-3] == ("validations", tiny_card.name, table.value)]
        assert re.search(r"Status:</span>\s*<i [^>]*check-circle[^>]*></i>\s*Succeeded", result.read_text())
    assert not (tmp_path / "docs" / tiny_card.name / "gx").exists()  # the site only, not the GX project


def test_a_second_ingest_replaces_the_site_and_leaves_no_temp_folder(tiny_card, tmp_path):
    for seed in (0, 1):
        summary = ingest(as_raw(tiny_card, make_tables(tiny_card, seed=seed)), tmp_path / "data",
                         tmp_path / "q", progress=False, docs_root=tmp_path / "docs")  # fmt: skip
    site = tmp_path / "docs" / tiny_card.name
    runs = {p.name for p in site.rglob("*") if p.is_dir() and re.match(r"\d{8}T\d{6}Z-", p.name)}
    assert runs == {summary.run_id}  # only the last version's validation
    assert [p.name for p in (tmp_path / "docs").iterdir()] == [tiny_card.name]


def test_published_tables_that_break_the_suite_are_refused_with_the_site_to_open(tiny_card, tmp_path):
    ingest(as_raw(tiny_card, make_tables(tiny_card)), tmp_path / "data", tmp_path / "q", progress=False)
    published = tmp_path / "data" / tiny_card.name
    labels = pd.read_parquet(published / Table.LABELS.filename)
    labels.loc[0, "label"] = 7  # written behind ingestion's back
    labels.to_parquet(published / Table.LABELS.filename)
    with pytest.raises(RuntimeError, match=r"fail .*expect_column_values_to_be_in_set\(label\).*index\.html"):
        build_data_docs(tiny_card, published, tmp_path / "docs", "tampered")
    assert (tmp_path / "docs" / "index.html").is_file()
