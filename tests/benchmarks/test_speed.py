"""`benchmarks/speed.py` end to end on the tiny random models and a small synthesised dataset: every
measurement is in the JSON with positive finite numbers."""

from __future__ import annotations

import json
import math

import pytest

from tests.benchmarks import load_script

pytestmark = pytest.mark.integration


def load_speed():
    return load_script("speed")


def test_speed_tiny_writes_every_measurement(qa_data, model_cache, tmp_path):
    out = tmp_path / "speed.json"
    argv = ["--tiny", "--device", "cpu", "--data-root", str(qa_data.parent), "--dataset", qa_data.name,
            "--cache-dir", str(model_cache), "--users", "8", "--steps", "3", "--step-repeats", "1",
            "--repeats", "1", "--out", str(out)]  # fmt: skip
    load_speed().main(argv)

    report = json.loads(out.read_text())
    whats = [r["what"] for r in report["measurements"]]
    for prefix in ("embed users/s: multi-encoder", "train step s: TMoLE", "S2Sched validation s",
                   "embed s: cold", "train step FLOP/s (6N) tmole", "train step FLOP/s (6N) lora",
                   "training run FLOP/s"):  # fmt: skip
        assert any(w.startswith(prefix) for w in whats), (prefix, whats)
    for r in report["measurements"]:
        for key in ("a", "b", "ratio"):
            assert math.isfinite(r[key]) and r[key] > 0, r
    raw = report["raw"]
    assert raw["embedding"]["cache_texts_encoded"]["warm"] == [0]  # the warm turns encode nothing
    assert all(n > 0 for n in raw["embedding"]["cache_texts_encoded"]["cold"])
    assert raw["training"]["steps"] == 3 and raw["training"]["s2sched_s"] > 0
    assert raw["training"]["texts_encoded_before_the_run"] >= 0
    assert raw["peak_flops"]["fp32"] > 0
    assert report["machine"]["cpu_count"] and report["peak_rss_mb"] > 0
    assert report["command"].startswith("benchmarks/speed.py --tiny")


def test_speed_names_the_ingest_command_when_data_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="instructue ingest nowhere"):
        load_speed().main(["--tiny", "--data-root", str(tmp_path), "--dataset", "nowhere"])
