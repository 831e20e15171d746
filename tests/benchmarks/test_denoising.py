"""`benchmarks/denoising.py` over two noise levels with the tiny profile: one model trained on one
level, every level evaluated, JSON + PNG written; a second call reuses the data, the model and every
finished level."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks import load_script

pytestmark = pytest.mark.integration


def test_denoising_writes_levels_and_reuses_finished_work(model_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INSTRUCTUE_CACHE", str(model_cache))
    denoising = load_script("denoising")
    out = tmp_path / "results" / "denoising.json"
    argv = ["--levels", "0,0.6", "--n-users", "100", "--profile", "tiny", "--set", "steps=2",
            "--train-noise", "0.6", "--eval-set", "seeds=[0,1]", "--eval-set", "tuning.shots_per_class=2",
            "--eval-set", "tuning.steps=1", "--eval-set", "tasks=[forest_click,game_topup,public_transit]",
            "--work", str(tmp_path / "work"), "--out", str(out)]  # fmt: skip
    got = denoising.main(argv)
    printed = capsys.readouterr().out

    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(got))
    assert [x["noise"] for x in on_disk["levels"]] == [0.0, 0.6]
    for level in on_disk["levels"]:
        assert set(level["mean_auc"]) == {"universal", "manual", "tuned", "sentence_encoder"}
        assert all(0.0 <= a <= 1.0 for a in level["mean_auc"].values())
        assert len(level["tasks"]) == 3 and level["reused"] is False
    low, high = on_disk["levels"]
    assert all(d == 0.0 for d in low["drop"].values())
    assert high["drop"]["tuned"] == pytest.approx(low["mean_auc"]["tuned"] - high["mean_auc"]["tuned"])
    assert on_disk["trained_on"] == {"n_users": 100, "seed": 0, "noise": 0.6}
    assert "| noise | universal | drop | manual | drop | tuned | drop | sentence_encoder | drop |" in printed
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "work" / "data").iterdir())) == 2  # the training level is one of them

    # second call: nothing is ingested, trained or evaluated again
    import components.ingestion as ingestion
    import components.training.trainer as trainer

    def refuse(*_a, **_k):
        raise AssertionError("finished work was redone")

    monkeypatch.setattr(ingestion, "ingest", refuse)
    monkeypatch.setattr(trainer, "train", refuse)
    monkeypatch.setattr(denoising, "evaluate_level", refuse)
    again = denoising.main(argv)
    assert all(x["reused"] for x in again["levels"])
    assert [x["mean_auc"] for x in again["levels"]] == [x["mean_auc"] for x in on_disk["levels"]]

    # another evaluation setting is another result: that level is evaluated again
    calls = []
    monkeypatch.setattr(denoising, "evaluate_level", lambda *a: calls.append(a) or refuse())
    with pytest.raises(AssertionError, match="redone"):
        denoising.main([*argv[:-2], "--eval-set", "seeds=[0]", "--out", str(out)])
    assert len(calls) == 1 and isinstance(calls[0][0], Path)
