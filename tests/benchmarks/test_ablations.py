"""benchmarks/ablations.py: every variant's overrides are a valid configuration that differs from the
full model as the paper's row says, and on the tiny profile two variants run through the retraining
flow, land in the JSON and, called again, reuse their finished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["steps=4", "checkpoint_every=2", "keep_checkpoints=2", "merge.validation_seeds=[0]"]
CHEAP_EVAL = {
    "seeds": [0, 1],
    "Cs": [1.0],
    "variants": ["universal", "manual"],
    "baselines.names": ["tabular"],
}
STEPS = ("ingest", "synthesize", "train", "merge", "evaluate")


@pytest.fixture
def ablations(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import ablations

    return ablations


@pytest.mark.unit
@pytest.mark.parametrize("profile", ["tiny", "quick"])
def test_every_variant_changes_what_its_row_says(ablations, profile):
    from components.modeling.config import InputMode, Inputs, Pooling
    from components.run_config import load_run
    from components.training.config import Scheduling, Tuner

    run = load_run(profile)
    full = run.train
    no_merge = run.merge.model_copy(update={"enabled": False})
    want = {
        "text_only": {"model": full.model.model_copy(update={"input_mode": InputMode.TEXT_ONLY,
                                                             "max_text_tokens": 256,
                                                             "gradient_checkpointing": True,
                                                             "answer_encoder": False,
                                                             "mean_skip": False})},
        "no_sequences": {"model": full.model.model_copy(update={"inputs": Inputs.TABULAR,
                                                                "mean_skip": False})},
        "no_tabular": {"model": full.model.model_copy(update={"inputs": Inputs.SEQUENCES})},
        "no_ntp": {"no_ntp": True},
        "no_contrastive": {"no_contrastive": True, "no_ntp": False},
        "mean_pooling": {"model": full.model.model_copy(update={"pooling": Pooling.MEAN})},
        "no_merge": {},
        "no_s2sched": {"scheduling": Scheduling.UNIFORM, "task_batches": None},  # they need S2Sched
        "no_tmole": {"tuner": Tuner.LORA},
        "no_all_three": {"scheduling": Scheduling.UNIFORM, "task_batches": None, "tuner": Tuner.LORA},
    }  # fmt: skip
    assert set(want) | {"full"} == set(ablations.BY_NAME)
    for v in ablations.VARIANTS:
        got = load_run(profile, list(v.overrides))
        assert got.train == full.model_copy(update=want.get(v.name, {})), v.name
        assert got.merge == (no_merge if v.name in ("no_merge", "no_all_three") else run.merge), v.name
    if profile == "quick":  # the profile the study runs: Table 4's switches are on in it
        assert full.tuner is Tuner.TMOLE and full.scheduling is Scheduling.S2SCHED and run.merge.enabled


@pytest.mark.unit
def test_selection_and_the_list(ablations, capsys):
    names = lambda vs: [v.name for v in vs]  # noqa: E731
    table3 = names(ablations.select("3"))
    assert table3[:2] == ["full", "text_only"] and "no_merge" not in table3
    assert names(ablations.select("4")) == ["full", "no_merge", "no_s2sched", "no_tmole", "no_all_three"]
    assert names(ablations.select(only=["no_ntp", "full"])) == ["full", "no_ntp"]
    with pytest.raises(ValueError, match="unknown variant.*no_such"):
        ablations.select(only=["no_such"])
    with pytest.raises(ValueError, match="no_sequences: .*steps"):
        ablations.validate_overrides("tiny", ["steps=0"], [ablations.BY_NAME["no_sequences"]])
    assert ablations.main(["--list", "--table", "4", "--set", "steps=20"]) == 0
    out = capsys.readouterr().out
    assert (
        "no_all_three" in out
        and "steps=20 merge.enabled=false scheduling=uniform task_batches=null tuner=lora" in out
    )


@pytest.fixture
def project(retrain_project):
    return retrain_project


@pytest.mark.integration
def test_two_variants_then_a_second_call_reuses_them(prefect_server, project, ablations, tmp_path):
    out = tmp_path / "ablations.json"
    kw = {"dataset": "synthetic-multisource", "profile": "tiny", "extra": TINY, "out": out,
          "root": str(project), "options": {"n_users": 100, "seed": 0}, "evaluation": CHEAP_EVAL}  # fmt: skip
    variants = ablations.select(only=["no_tabular"])
    ablations.run_study(variants, **kw)
    written = json.loads(out.read_text())
    assert written["machine"]["cpu_count"] and written["profile"] == "tiny"
    rows = {r["variant"]: r for r in written["rows"]}
    assert list(rows) == ["full", "no_tabular"]
    for r in rows.values():
        assert r["error"] is None and r["states"]["train"] == "Completed"
        assert r["machine"]["cpu_count"] and r["machine"]["cpu_model"]  # each row names its host
        assert r["mean_auc"]["tuned"] is None and 0 <= r["mean_auc"]["mean"] <= 1
        assert r["seconds"]["train"] > 0 and r["train_wall_s"] > 0
        assert r["tasks"] and all(set(by) == {"universal", "manual"} for by in r["tasks"].values())
    assert rows["no_tabular"]["overrides"] == [*TINY, "model.inputs=sequences"]
    assert rows["full"]["run_dir"] != rows["no_tabular"]["run_dir"]
    assert all(r["run_dir"].startswith("runs/") for r in rows.values())  # no machine paths
    assert str(project) not in out.read_text()
    saved = json.loads((project / rows["no_tabular"]["winner_dir"] / "model.json").read_text())
    assert saved["config"]["inputs"] == "sequences"

    again = ablations.run_study(variants, **kw)
    for r in again["rows"]:
        assert {r["states"][k] for k in STEPS} == {"Cached"}, r["states"]
        assert r["mean_auc"] == rows[r["variant"]]["mean_auc"] and r["tasks"] == rows[r["variant"]]["tasks"]


@pytest.mark.unit
def test_keep_finished_runs_only_what_the_json_lacks(ablations, tmp_path, monkeypatch):
    out = tmp_path / "ablations.json"
    extra = ["model.bf16=false"]

    def row(name, overrides, error=None, config=None):
        config = config or ablations.config_digest("quick", overrides)
        return {"variant": name, "table": None, "paper_row": name, "extra": extra, "overrides": overrides,
                "config": config, "error": error, "mean_auc": {"universal": 0.6, "manual": 0.6, "tuned": 0.6, "mean": 0.6},
                "states": {}, "wall_s": 1.0, "run_dir": "runs/x"}  # fmt: skip

    no_ntp = ablations.BY_NAME["no_ntp"]
    no_tabular = ablations.BY_NAME["no_tabular"]
    no_merge = ablations.BY_NAME["no_merge"]
    rows = [
        row("full", extra),  # finished: kept
        row("no_ntp", [*extra, *no_ntp.overrides], error="killed"),  # failed: runs again
        row("no_tabular", ["steps=3", *no_tabular.overrides]),  # other overrides: runs again
        row("no_merge", [*extra, *no_merge.overrides], config="an-older-profile"),  # stale: dropped
    ]
    out.write_text(
        json.dumps({"dataset": "movielens-100k", "profile": "quick", "extra": extra, "rows": rows})
    )
    ran = []

    def fake_run(variant, dataset, profile, extra_, **kw):
        ran.append(variant.name)
        return row(variant.name, [*extra_, *variant.overrides])

    monkeypatch.setattr(ablations, "run_variant", fake_run)
    variants = ablations.select(only=["no_ntp", "no_tabular"])
    written = ablations.run_study(variants, "movielens-100k", "quick", extra, out, keep_finished=True)
    assert ran == ["no_ntp", "no_tabular"]
    assert {r["variant"]: r["error"] for r in written["rows"]} == {  # no_merge went, nothing ran it
        "full": None,
        "no_ntp": None,
        "no_tabular": None,
    }
    assert out.with_suffix(".png").stat().st_size > 0  # the plot follows the JSON
    ran.clear()
    ablations.run_study(variants, "movielens-100k", "quick", extra, out, keep_finished=True)
    assert ran == []  # everything is finished now
    ablations.run_study(variants, "movielens-100k", "quick", extra, out)
    assert ran == ["full", "no_ntp", "no_tabular"]  # without the flag every variant runs


@pytest.mark.unit
def test_plot_only_redraws_from_the_json_and_runs_nothing(ablations, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ablations.json"
    means = {"universal": 0.61, "manual": 0.6, "tuned": 0.59, "mean": 0.6}
    rows = [
        {"variant": "full", "table": None, "paper_row": "full model", "mean_auc": means,
         "best_baseline": "sentence_encoder", "best_baseline_mean_auc": 0.69},
        {"variant": "no_ntp", "table": 3, "paper_row": "w/o next-token loss", "error": "killed"},
    ]  # fmt: skip
    out.write_text(json.dumps({"rows": rows}))
    monkeypatch.setattr(ablations, "run_variant", lambda *a, **k: pytest.fail("--plot-only ran a variant"))
    assert ablations.main(["--plot-only", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| full | full model | 0.610 | 0.600 | 0.590 | 0.600 |" in printed
    assert "| no_ntp | w/o next-token loss | failed: killed |" in printed
    assert out.with_suffix(".png").stat().st_size > 0
    with pytest.raises(SystemExit):
        ablations.main(["--plot-only", "--out", str(tmp_path / "missing.json")])
