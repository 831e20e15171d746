"""Choosing among the merged model, the final model and the best single checkpoint (RecFound 4.4)."""

import json

import pytest

from components.merging.config import MergeSettings
from components.merging.select import FINAL, MERGED, candidates, choose, merge_and_select

pytestmark = pytest.mark.unit


def test_merged_wins_only_when_it_beats_the_best_single_checkpoint():
    scores = {"step-1": 0.60, FINAL: 0.58, MERGED: 0.61}
    assert choose(scores) == (MERGED, "step-1")
    assert choose(scores, min_gain=0.02) == ("step-1", "step-1")  # a gain within min_gain is not enough
    assert choose({"step-1": 0.60, FINAL: 0.62, MERGED: 0.61}) == (FINAL, FINAL)


def test_a_tie_goes_to_the_later_checkpoint_and_never_to_the_merge():
    assert choose({"step-1": 0.6, FINAL: 0.6, MERGED: 0.6}) == (FINAL, FINAL)
    assert choose({"step-1": 0.6, FINAL: 0.5}, merged=None) == ("step-1", "step-1")


def test_the_final_model_must_be_scored():
    with pytest.raises(ValueError, match="final"):
        choose({"step-1": 0.6, MERGED: 0.7})


def test_a_checkpoint_of_the_last_step_is_scored_once_as_the_final_model(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"steps": 20}))
    ckpts = [run / "checkpoints" / "step-00000010", run / "checkpoints" / "step-00000020"]
    assert candidates(run, ckpts) == {"step-00000010": ckpts[0], FINAL: run / "model"}


def test_a_run_without_a_final_model_takes_its_latest_checkpoint_as_final(tmp_path):
    ckpts = [tmp_path / "step-00000010", tmp_path / "step-00000020"]
    assert candidates(tmp_path, ckpts) == {"step-00000010": ckpts[0], FINAL: ckpts[1]}


@pytest.mark.integration
def test_a_tiny_run_is_merged_scored_and_the_decision_recorded(qa_data, model_cache, tmp_path):
    from components.training.config import load_profile
    from components.training.trainer import train

    config = load_profile("tiny", ["steps=6", "checkpoint_every=2", "keep_checkpoints=3"])
    run = tmp_path / "run"
    train(config, qa_data, run, cache_dir=model_cache, progress=False)
    seen = []

    def score(folder):  # the merged model scores best: it must win, by the margins recorded
        seen.append(folder.name)
        return {"merged": 0.9, "model": 0.5}.get(folder.name, 0.7)

    selection = merge_and_select(run, MergeSettings(last=3), score)
    assert sorted(seen) == sorted(["step-00000002", "step-00000004", "model", "merged"])
    assert selection.winner == MERGED and selection.winner_dir == run / "merged"
    assert selection.best_single == "step-00000004"  # tie with step 2: the later one
    assert selection.margin_over_final == pytest.approx(0.4)
    assert selection.margin_merged_vs_best_single == pytest.approx(0.2)
    written = json.loads((run / "selection.json").read_text())
    assert written["winner"] == MERGED and written["settings"]["density"] == 0.2
    assert written["merge"]["factor_pairs"] > 0


def test_merging_off_still_selects_among_singles(tmp_path):
    run = tmp_path / "run"
    ckpts = [run / "checkpoints" / "step-00000002", run / "checkpoints" / "step-00000004"]
    scores = {"step-00000002": 0.8, "step-00000004": 0.6}
    selection = merge_and_select(
        run, MergeSettings(enabled=False), lambda f: scores[f.name], checkpoints=ckpts
    )
    assert (selection.winner, selection.margin_over_final) == ("step-00000002", pytest.approx(0.2))
    assert selection.merge is None and not (run / "merged").exists()


@pytest.mark.integration
def test_merge_cli_scores_with_the_validation_probe(qa_data, model_cache, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from components.training.config import load_profile
    from components.training.trainer import train
    from flows.cli import app

    config = load_profile("tiny", ["steps=4", "checkpoint_every=2", "keep_checkpoints=2"])
    run = tmp_path / "run"
    train(config, qa_data, run, cache_dir=model_cache, progress=False)
    root = qa_data.parent.parent
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(model_cache))
    result = CliRunner().invoke(
        app, ["merge", "--run", str(run), "--dataset", qa_data.name, "--root", str(root)]
    )
    assert result.exit_code == 0, result.output
    written = json.loads((run / "selection.json").read_text())
    assert set(written["scores"]) == {"step-00000002", FINAL, MERGED}
    assert all(0.0 <= s <= 1.0 for s in written["scores"].values())
    assert written["details"][FINAL]["n_users"] >= 20
    assert f"winner: {written['winner']}" in result.output


def test_without_selection_the_merge_is_kept_unscored(tmp_path, monkeypatch):
    import components.merging.select as select

    run = tmp_path / "run"
    ckpts = [run / "checkpoints" / "step-00000002", run / "checkpoints" / "step-00000004"]
    monkeypatch.setattr(select, "merge_run", lambda *a, **k: select.MergeReport([], 0.2, "trim_first", 0))

    def never(folder):
        raise AssertionError("select=false must not score")

    selection = merge_and_select(run, MergeSettings(select=False), never, checkpoints=ckpts)
    assert selection.winner == MERGED and selection.details[MERGED] == {"scored": False}
