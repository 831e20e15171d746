"""`benchmarks/quality.py` on a tiny model: evaluated now (two baselines, three variants), then the
same report read back from a run folder and found as the newest run of a dataset and profile."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.benchmarks import load_script

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def quality():
    return load_script("quality")


@pytest.fixture(scope="module")
def tiny_model(qa_data, model_cache, tmp_path_factory) -> Path:
    from components.training.config import load_profile
    from components.training.trainer import train

    run = tmp_path_factory.mktemp("quality-run") / "run"
    return train(
        load_profile("tiny", ["steps=2"]), qa_data, run, cache_dir=model_cache, progress=False
    ).model_dir


CHEAP = ["--set", "seeds=[0,1]", "--set", "tuning.shots_per_class=3", "--set", "tuning.steps=2",
         "--set", "baselines.names=[tabular,svd]"]  # fmt: skip


def test_quality_evaluates_a_model_and_reads_reports_back(quality, tiny_model, qa_data, model_cache,
                                                          tmp_path, monkeypatch, capsys):  # fmt: skip
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(model_cache))
    out = tmp_path / "results" / "quality.json"
    got = quality.main(["--model", str(tiny_model), "--data", str(qa_data), "--root", str(tmp_path),
                        "--out", str(out), *CHEAP])  # fmt: skip
    printed = capsys.readouterr().out

    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(got))
    tasks = on_disk["tasks"]
    assert len(tasks) == 6 and on_disk["dataset"] == "synthetic-multisource" and on_disk["seeds"] == 2
    assert list(on_disk["rows"]) == ["tabular", "svd", "universal", "manual", "tuned"]
    for name, row in on_disk["rows"].items():
        assert row["kind"] == ("baseline" if name in ("tabular", "svd") else "variant")
        assert set(row["tasks"]) == set(tasks)
        for cell in row["tasks"].values():
            assert 0.0 <= cell["auc"] <= 1.0 and cell["auc_std"] >= 0.0 and 0.0 <= cell["ks"] <= 1.0
        assert row["mean_auc"] == pytest.approx(np.mean([c["auc"] for c in row["tasks"].values()]))
    rows, summary = on_disk["rows"], on_disk["summary"]
    best = max(("tabular", "svd"), key=lambda b: rows[b]["mean_auc"])
    assert summary["variant"] == "tuned" and summary["best_baseline"] == best
    assert summary["mean_margin"] == pytest.approx(rows["tuned"]["mean_auc"] - rows[best]["mean_auc"])
    assert summary["beats_every_baseline_on_mean"] == (summary["mean_margin"] > 0)
    for t, m in summary["per_task"].items():
        top = max(rows["tabular"]["tasks"][t]["auc"], rows["svd"]["tasks"][t]["auc"])
        assert m["margin"] == pytest.approx(rows["tuned"]["tasks"][t]["auc"] - top)
    assert on_disk["machine"]["cpu_count"] and "--model" in on_disk["command"]
    assert "| AUC | " + " | ".join(tasks) + " | mean |" in printed
    assert "| KS | " in printed and "| svd (baseline) |" in printed and summary["line"] in printed
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = Path(on_disk["report"])
    assert report == tiny_model.parent / "evaluation-quality-model" / "report.json"

    # the report read back from its run folder, then found as the newest run of a dataset/profile
    again = quality.main(
        ["--run-dir", str(report.parent.parent), "--out", str(tmp_path / "a.json"), "--no-plot"]
    )
    assert again["rows"] == on_disk["rows"] and again["summary"] == on_disk["summary"]
    run = tmp_path / "runs" / "synthetic-multisource-tiny-0123abcd" / "evaluation"
    run.mkdir(parents=True)
    shutil.copy(report, run / "report.json")
    newest = quality.main(["--root", str(tmp_path), "--dataset", "synthetic-multisource", "--profile", "tiny",
                           "--out", str(tmp_path / "b.json"), "--no-plot"])  # fmt: skip
    assert newest["report"] == str(run / "report.json") and newest["rows"] == on_disk["rows"]


def test_verdict_reports_per_task_and_mean_margins(quality):
    def row(kind, a, b):
        cell = lambda x: {"auc": x, "auc_std": 0.0, "ks": 0.0, "ks_std": 0.0}  # noqa: E731
        return {
            "kind": kind,
            "tasks": {"t1": cell(a), "t2": cell(b)},
            "mean_auc": (a + b) / 2,
            "mean_ks": 0.0,
        }

    rows = {"svd": row("baseline", 0.70, 0.60), "tabular": row("baseline", 0.55, 0.75),
            "universal": row("variant", 0.5, 0.5), "tuned": row("variant", 0.72, 0.70)}  # fmt: skip
    v = quality.verdict(rows, ["t1", "t2"])
    assert v["best_baseline"] == "tabular" and v["beats_every_baseline_on_mean"] is True
    assert v["mean_margin"] == pytest.approx(0.71 - 0.65)
    assert v["per_task"]["t1"] == {"best_baseline": "svd", "margin": pytest.approx(0.02)}
    assert v["per_task"]["t2"] == {"best_baseline": "tabular", "margin": pytest.approx(-0.05)}
    assert v["tasks_won"] == ["t1"] and v["beats_every_baseline_on_every_task"] is False
    assert "t2 -0.050 vs tabular" in v["line"]
    with pytest.raises(SystemExit, match="no evaluation report"):
        quality.newest_report(Path("/nonexistent"), "x", "quick")
