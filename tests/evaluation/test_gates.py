"""Gates: each of the three checks fails on crafted inputs and names the culprit; the shipped
gates.yaml loads for every dataset, and invalid settings are refused in one message."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.evaluation.gates import (
    GateConfigError,
    GateSettings,
    check_gates,
    load_gate_settings,
    load_gates_file,
    pick_variant,
)

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]

GOOD = {
    "universal": {"a": 0.70, "b": 0.66},
    "manual": {"a": 0.72, "b": 0.70},
    "tuned": {"a": 0.75, "b": 0.71},
}
BASELINES = {"svd": {"a": 0.65, "b": 0.60}, "tabular": {"a": 0.60, "b": 0.62}}


def test_a_good_candidate_passes_and_best_variant_is_judged():
    verdict = check_gates(GOOD, BASELINES, GateSettings(), champion={"a": 0.74, "b": 0.70})
    assert verdict.passed and verdict.reasons == []
    assert verdict.variant == "tuned"
    assert verdict.to_dict()["passed"] is True and len(verdict.to_dict()["notes"]) == 3


def test_floor_fails_on_a_weak_task():
    weak = {"universal": {"a": 0.90, "b": 0.49}}
    verdict = check_gates(weak, BASELINES, GateSettings(auc_floor=0.5))
    assert not verdict.passed
    assert len(verdict.reasons) == 1 and verdict.reasons[0].startswith("floor: task b AUC 0.4900")


def test_task_floor_overrides_the_default_floor():
    verdict = check_gates(GOOD, BASELINES, GateSettings(variant="manual", task_floors={"a": 0.8}))
    assert [r.split(" AUC")[0] for r in verdict.reasons] == ["floor: task a"]


def test_champion_regression_beyond_tolerance_fails():
    champion = {"a": 0.80, "b": 0.71}  # a: 0.75 is 0.05 below; b: 0.71 equal
    verdict = check_gates(GOOD, BASELINES, GateSettings(champion_tolerance=0.02), champion)
    assert not verdict.passed
    assert (
        len(verdict.reasons) == 1
        and "task a AUC 0.7500 is 0.0500 below the champion's 0.8000" in (verdict.reasons[0])
    )
    within = check_gates(GOOD, BASELINES, GateSettings(champion_tolerance=0.06), champion)
    assert within.passed


def test_champion_task_missing_from_candidate_fails():
    verdict = check_gates(GOOD, BASELINES, GateSettings(), champion={"c": 0.6})
    assert not verdict.passed and "task c" in verdict.reasons[0]


def test_losing_to_the_best_baseline_fails():
    strong = {"svd": {"a": 0.80, "b": 0.78}, "tabular": {"a": 0.6, "b": 0.6}}
    verdict = check_gates(GOOD, strong, GateSettings())
    assert not verdict.passed
    assert verdict.reasons == [
        "baseline: mean AUC 0.7300 (tuned) does not beat the best baseline svd (0.7900)"
    ]
    assert check_gates(GOOD, strong, GateSettings(beat_best_baseline=False)).passed


def test_baseline_margin():
    verdict = check_gates(GOOD, BASELINES, GateSettings(baseline_margin=0.2))
    assert not verdict.passed and "by more than 0.2000" in verdict.reasons[0]


def test_configured_variant_that_was_not_evaluated_fails():
    no_tuned = {k: v for k, v in GOOD.items() if k != "tuned"}
    verdict = check_gates(no_tuned, BASELINES, GateSettings(variant="tuned"))
    assert not verdict.passed and "not evaluated" in verdict.reasons[0]
    assert pick_variant(no_tuned, "best") == "manual"


def test_shipped_gates_file_loads_for_every_dataset_and_default():
    gates = load_gates_file(REPO / "mlruns_config" / "gates.yaml")
    for name in [*gates.datasets, "some-other-dataset"]:
        assert isinstance(gates.for_dataset(name), GateSettings)
    assert load_gate_settings(REPO, "movielens-100k").auc_floor == 0.5


def test_missing_gates_file_gives_defaults(tmp_path):
    assert load_gate_settings(tmp_path, "x") == GateSettings()


def test_invalid_gates_are_refused_in_one_message(tmp_path):
    bad = tmp_path / "gates.yaml"
    bad.write_text(
        "default: {auc_floor: 0.5}\ndatasets:\n  a: {auc_flor: 0.6}\n  b: {champion_tolerance: -1}\n",
        encoding="utf-8",
    )
    with pytest.raises(GateConfigError) as e:
        load_gates_file(bad)
    assert "datasets.a" in str(e.value) and "datasets.b" in str(e.value) and "auc_flor" in str(e.value)
