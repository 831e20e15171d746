"""`benchmarks/length_groups.py` on the tiny random models and a small synthesised dataset: grouped
passes read the same tokens as padded ones and compute fewer padded positions."""

from __future__ import annotations

import json
import math

import pytest

from tests.benchmarks import load_script

pytestmark = pytest.mark.integration


def load_length_groups():
    return load_script("length_groups")


def test_grouped_steps_read_the_same_tokens_and_pad_less(qa_data, model_cache, tmp_path):
    out = tmp_path / "length_groups.json"
    argv = ["--profile", "tiny", "--data-root", str(qa_data.parent), "--dataset", qa_data.name,
            "--cache-dir", str(model_cache), "--steps", "2", "--overheads", "none,0", "--out", str(out)]  # fmt: skip
    load_length_groups().main(argv)

    report = json.loads(out.read_text())
    assert report["command"].startswith("python benchmarks/length_groups.py --profile tiny")
    rows = {r["variant"]: r for r in report["rows"]}
    padded, grouped = rows["none"], rows["overhead_0"]
    assert padded["tokens"] == grouped["tokens"] > 0
    assert grouped["positions"] == grouped["tokens"]  # free calls: every group of one length
    assert padded["positions"] > padded["tokens"] and grouped["calls"] > padded["calls"]
    assert all(math.isfinite(r["median_s"]) and r["median_s"] > 0 for r in rows.values())


def test_names_the_ingest_command_when_data_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="instructue ingest nowhere"):
        load_length_groups().main(["--profile", "tiny", "--data-root", str(tmp_path), "--dataset", "nowhere"])
