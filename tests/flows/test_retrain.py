"""The retraining flow end to end on the tiny profile: a registered version at the end, a re-run that
hits the cache at every step, and a failing gate that leaves the registry as it was."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHEAP_EVAL = {"seeds": [0, 1], "variants": ["universal", "manual", "tuned"], "tuning.steps": 2,
              "tuning.shots_per_class": 2, "baselines.names": ["tabular"],
              "gate.beat_best_baseline": False, "gate.auc_floor": 0.0}  # fmt: skip
TINY = ["steps=4", "checkpoint_every=2", "keep_checkpoints=2", "tuner=tmole", "scheduling=s2sched",
        "s2sched.eval_every=1", "s2sched.warmup_ratio=0"]  # fmt: skip


@pytest.fixture
def project(retrain_project):
    return retrain_project


def run(project, evaluation=None, overrides_extra=(), n_users=100, **kw):
    from flows.retrain import retrain_flow

    return retrain_flow(dataset="synthetic-multisource", profile="tiny", overrides=[*TINY, *overrides_extra],
                        options={"n_users": n_users, "seed": 0}, root=str(project),
                        evaluation={**CHEAP_EVAL, **(evaluation or {})}, **kw)  # fmt: skip


def versions(project):
    from components.registry.settings import RegistrySettings

    settings = RegistrySettings.load(project)
    client = settings.client(project)
    return sorted(
        int(v.version) for v in client.search_model_versions("name='instructue-synthetic-multisource'")
    )


def test_retrain_registers_then_a_rerun_hits_the_cache(prefect_server, project, monkeypatch):
    import components.run_config as run_config

    loads, real = [], run_config.load_run
    monkeypatch.setattr(run_config, "load_run", lambda *a, **k: loads.append(a) or real(*a, **k))
    first = run(project)
    assert len(loads) == 1  # the profile is read once per retrain (issue 28)
    resolved = real("tiny", TINY).model_dump(mode="json")  # what the CLI passes after its one read
    monkeypatch.setattr(run_config, "load_run", lambda *a, **k: pytest.fail("loaded again"))
    assert first["registered"]["version"] == "1" and versions(project) == [1]
    assert first["selection"]["winner"] in first["selection"]["scores"]
    assert first["evaluation"]["gate"]["passed"] is True
    assert set(first["states"].values()) == {"Completed"}
    winner = first["selection"]["folders"][first["selection"]["winner"]]
    assert (Path(winner) / "tuned_instructions.safetensors").is_file()  # `embed --tuned` finds them
    report = Path(first["evaluation"]["folder"])
    assert {"report_s2sched_ratios.png", "report_tmole_routing.png"} <= {p.name for p in report.iterdir()}

    again = run(project, config=resolved)  # validated by the flow, not loaded
    cached = {k for k, v in again["states"].items() if v == "Cached"}
    assert cached == {"ingest", "synthesize", "train", "merge", "evaluate", "register"}
    assert again["registered"] == first["registered"] and versions(project) == [1]

    # a changed evaluation default (not an override) must re-run the evaluation, and only it
    import flows.evaluate

    resolve = flows.evaluate.build_settings

    def other_default(*args, **kw):
        settings = resolve(*args, **kw)
        return settings.model_copy(update={"tuning": settings.tuning.model_copy(update={"lr": 0.5})})

    monkeypatch.setattr(flows.evaluate, "build_settings", other_default)
    third = run(project, config=resolved)
    assert third["states"]["evaluate"] == "Completed"
    assert {k for k, v in third["states"].items() if v == "Cached"} >= {"train", "merge"}


def test_a_failing_gate_fails_the_flow_and_registers_nothing(prefect_server, project):
    from flows.retrain import GateFailedError, retrain_flow  # noqa: F401

    state = run(project, evaluation={"gate.auc_floor": 1.0}, return_state=True)
    assert state.is_failed()
    with pytest.raises(GateFailedError, match="gate failed"):
        state.result()
    assert versions(project) == []


def test_runs_that_share_a_training_do_not_answer_from_each_others_overwritten_outputs(
    prefect_server, project
):
    """Another merge setting over the same training rewrites the run folder's selection and report; a
    re-run of the first setting must then merge and evaluate again, not return the cached records of
    files that are no longer its own."""
    import json

    merged = ["merge.select=false"]  # the merge wins unscored; without it, the final checkpoint
    first = run(project, register_model=False, overrides_extra=merged)
    assert first["selection"]["winner"] == "merged"
    other = run(project, register_model=False, overrides_extra=[*merged, "merge.enabled=false"])
    assert other["train"]["run_dir"] == first["train"]["run_dir"]  # one training, two merges
    assert other["states"]["train"] == "Cached" and other["selection"]["winner"] != "merged"

    again = run(project, register_model=False, overrides_extra=merged)
    assert again["states"]["train"] == "Cached"
    assert again["states"]["merge"] == "Completed" and again["states"]["evaluate"] == "Completed"
    run_dir = Path(again["train"]["run_dir"])
    assert json.loads((run_dir / "selection.json").read_text())["settings"]["enabled"] is True
    report = json.loads((run_dir / "evaluation" / "report.json").read_text())
    assert Path(report["model_dir"]).name == "merged"

    settled = run(project, register_model=False, overrides_extra=merged)  # the folder is its own again
    assert {settled["states"][s] for s in ("train", "merge", "evaluate")} == {"Cached"}


def test_other_reader_options_overwrite_the_data_and_the_first_options_ingest_again(
    prefect_server, project, monkeypatch
):
    """Runs with other reader options share `data/<dataset>/`. After one wrote over the first's data
    (and then failed in training), a re-run of the first options must ingest and synthesize again, not
    take the cache's word for files that are gone; its training, merge and evaluation are then the
    first run's, from the cache."""
    from prefect import task

    import flows.retrain
    from flows.caching import file_digest

    users = project / "data" / "synthetic-multisource" / "users.parquet"
    first = run(project, register_model=False)
    first_users = file_digest(users)

    @task(name="train")
    def broken_train(*_args, **_kw):
        raise RuntimeError("training crashed")

    with monkeypatch.context() as patch:
        patch.setattr(flows.retrain, "train_step", broken_train)
        other = run(project, register_model=False, n_users=40, return_state=True)
    assert other.is_failed()
    assert file_digest(users) != first_users  # the 40 users' data is on disk now

    again = run(project, register_model=False)
    assert again["states"]["ingest"] == "Completed" and again["states"]["synthesize"] == "Completed"
    assert file_digest(users) == first_users
    assert {again["states"][s] for s in ("train", "merge", "evaluate")} == {"Cached"}
    assert again["train"]["run_dir"] == first["train"]["run_dir"]


def test_a_step_key_file_trusts_outputs_only_when_it_names_the_key(tmp_path):
    from flows.retrain import _outputs_are, _stamp

    output, marker = tmp_path / "manifest.json", tmp_path / "keys" / ".ingest.key"
    assert not _outputs_are(output, marker, "k1")  # no outputs
    output.write_text("{}")
    assert _outputs_are(output, marker, "k1")  # outputs from before key files: trusted
    _stamp(marker, "k1", "Cached")  # a cache hit wrote nothing, so it vouches for nothing
    assert not marker.exists()
    _stamp(marker, "k2", "Completed")  # another run (other reader options) wrote over them
    assert _outputs_are(output, marker, "k2") and not _outputs_are(output, marker, "k1")
