"""`benchmarks/contrastive_batch.py` on the tiny profile: both modes run from the same start, every
step is recorded, the JSON and the plot are written."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks import load_script

pytestmark = pytest.mark.integration


def test_both_modes_memorise_from_the_same_start_and_are_written(qa_data, model_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(model_cache))
    script = load_script("contrastive_batch")
    out = tmp_path / "batch.json"
    assert script.main(["--profile", "tiny", "--data", str(qa_data), "--dataset", "synthetic",
                        "--batch", "4", "--steps", "3", "--out", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    raw, centred = report["modes"]["raw"], report["modes"]["centred"]
    assert report["batch"] == 4 and len(set(report["users"])) == 4
    # the same initial weights: the raw states' similarities agree before the first step
    assert raw["start"]["user_cos"] == centred["start"]["user_cos"]
    assert raw["start"]["answer_cos"] == centred["start"]["answer_cos"]
    for mode in (raw, centred):
        assert [h["step"] for h in mode["history"]] == [1, 2, 3]
        assert all(0.0 <= h["top1"] <= 1.0 and h["info_nce"] >= 0.0 for h in mode["history"])
    assert out.with_suffix(".png").stat().st_size > 0


def test_a_batch_larger_than_the_task_is_a_clear_error(qa_data, model_cache, monkeypatch):
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(model_cache))
    script = load_script("contrastive_batch")
    with pytest.raises(SystemExit, match="distinct answers; lower --batch"):
        script.main(["--profile", "tiny", "--data", str(qa_data), "--batch", "100000", "--steps", "1"])
