"""The whole evaluation on a tiny TMoLE + S2Sched model trained for a few steps on the synthetic
dataset: every variant and baseline probed on the same halves, tuning users never evaluated and
their labels the only ones tuning reads, the baseline cache hit on a second run, the report's JSON
contract and its plots, and logging the report into an MLflow run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import components.evaluation.evaluate as evaluate_module
import components.evaluation.probe as probe_module
from components.evaluation.baselines import Baseline, BaselineSettings
from components.evaluation.evaluate import EvaluationSettings, TuningConfig, evaluate_model
from components.evaluation.report import REPORT_JSON, REPORT_MD, write_report

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_run(qa_data, model_cache, tmp_path_factory) -> Path:
    from components.training.config import load_profile
    from components.training.trainer import train

    config = load_profile(
        "tiny",
        ["steps=6", "tuner=tmole", "scheduling=s2sched", "s2sched.eval_every=2", "s2sched.warmup_ratio=0",
         "checkpoint_every=3"],
    )  # fmt: skip
    run = tmp_path_factory.mktemp("eval-run") / "run"
    return train(config, qa_data, run, cache_dir=model_cache, progress=False).model_dir


def settings(**kw) -> EvaluationSettings:
    base = dict(
        seeds=[0, 1],
        tuning=TuningConfig(shots_per_class=3, steps=2),
        baselines=BaselineSettings(svd_components=8, text_tokens=32),
    )
    return EvaluationSettings(**{**base, **kw})


def test_evaluate_writes_a_report_with_every_variant_baseline_and_plot(
    tiny_run, qa_data, model_cache, tmp_path, monkeypatch
):
    tuned_calls, splits = [], []
    real_tune, real_split = evaluate_module.tune_instructions, probe_module.split_halves

    def spy_split(y, seed, fit_fraction=0.5, always_fit=None):
        fit, held = real_split(y, seed, fit_fraction, always_fit)
        splits.append((always_fit, held))
        return fit, held

    def spy_tune(inputs, tuning_users, s):
        import components.evaluation.tuning as tuning

        real = tuning.tune_instruction

        def record(model, card, tables, task, user_ids, labels, ts):
            tuned_calls.append((task, list(user_ids), np.asarray(labels)))
            return real(model, card, tables, task, user_ids, labels, ts)

        monkeypatch.setattr(tuning, "tune_instruction", record)
        return real_tune(inputs, tuning_users, s)

    monkeypatch.setattr(probe_module, "split_halves", spy_split)
    monkeypatch.setattr(evaluate_module, "tune_instructions", spy_tune)

    result = evaluate_model(tiny_run, qa_data, settings(), tmp_path / "cache", asset_cache=model_cache)
    tasks = result.tasks
    assert len(tasks) == 6 and set(result.variants) == {"universal", "manual", "tuned"}
    assert set(result.baselines) == {b.value for b in Baseline}
    for scores in [*result.variants.values(), *result.baselines.values()]:
        assert set(scores) == set(tasks)
        assert all(0.0 <= s.auc <= 1.0 and s.n_seeds == 2 for s in scores.values())

    # tuning read the labels of its few-shot users only, and those users were never evaluated
    from components.ingestion.contract import read_tables

    _, tables = read_tables(qa_data)
    truth = tables.labels.set_index(["task", "user_id"])["label"]
    assert [t for t, _, _ in tuned_calls] == tasks
    for task, users, labels in tuned_calls:
        assert users == result.tuning_users[task] and len(users) == len(set(users)) <= 6
        assert labels.tolist() == [int(truth[(task, u)]) for u in users]
    forced_splits = [(f, h) for f, h in splits if f is not None]
    assert len(forced_splits) == 2 * len(tasks) * (3 + 4)  # seeds x tasks x representations
    assert all(not f[h].any() for f, h in forced_splits)

    assert not any(result.baseline_cached.values())
    assert result.s2sched and set(result.s2sched) == {"embedding", "generative"}
    assert result.routing is not None and result.routing["embedding"].shape[0] == len(result.routing["tasks"])

    out = tmp_path / "report"
    report = write_report(result, out)
    on_disk = json.loads((out / REPORT_JSON).read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert set(on_disk["gate"]) >= {"passed", "reasons"} and isinstance(on_disk["gate"]["passed"], bool)
    head = on_disk["headline"]
    for key in ("mean_auc_universal", "mean_auc_manual", "mean_auc_tuned", "best_baseline_mean_auc"):
        assert isinstance(head[key], float)
    assert head["best_baseline"] in on_disk["baselines"]
    assert set(on_disk["tasks"][tasks[0]]["tuned"]) >= {"auc", "auc_std", "ks", "ks_std"}
    assert set(on_disk["baselines"]["svd"][tasks[0]]) >= {"auc", "auc_std", "ks", "ks_std"}
    assert {"load", "tune", "embed", "baselines", "probe", "plots"} <= set(on_disk["seconds"])
    assert set(on_disk["plots"]) == {"tsne", "roc", "s2sched", "routing"}
    for name in on_disk["plots"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / REPORT_MD).read_text()
    assert "| task | universal | manual | tuned | raw_backbone" in md and "Gate:" in md

    # second run: every baseline comes from the cache; same features, same halves, same numbers
    again = evaluate_model(tiny_run, qa_data, settings(), tmp_path / "cache", asset_cache=model_cache)
    assert all(again.baseline_cached.values())
    for b in result.baselines:
        assert [again.baselines[b][t] for t in tasks] == [result.baselines[b][t] for t in tasks]
    assert len(list((tmp_path / "cache" / "baselines").glob("*/features.npy"))) == 4


def test_log_to_mlflow_records_metrics_tags_and_artifacts(tmp_path):
    from mlflow.tracking import MlflowClient

    from components.evaluation.tracking import log_to_mlflow

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("eval", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "report.md").write_text("# r\n")
    report = {
        "model_digest": "ab" * 32,
        "gate": {"passed": False, "reasons": ["floor: task a AUC 0.4 is below the floor 0.5"]},
        "headline": {"mean_auc_universal": 0.6, "mean_auc_manual": 0.62, "mean_auc_tuned": None,
                     "best_baseline": "svd", "best_baseline_mean_auc": 0.7},
        "tasks": {"a": {"universal": {"auc": 0.4}}},
        "baselines": {"svd": {"a": {"auc": 0.7}}},
    }  # fmt: skip
    log_to_mlflow(client, run_id, report, folder)
    run = client.get_run(run_id)
    assert run.data.metrics["eval/mean_auc_manual"] == 0.62 and "eval/mean_auc_tuned" not in run.data.metrics
    assert run.data.metrics["eval/universal/a/auc"] == 0.4 and run.data.metrics["eval/svd/a/auc"] == 0.7
    assert run.data.tags["eval.gate"] == "failed"
    assert run.data.tags["eval.model_digest"] == "ab" * 32  # what registration finds the evaluation by
    assert [a.path for a in client.list_artifacts(run_id, "evaluation")] == ["evaluation/report.md"]
