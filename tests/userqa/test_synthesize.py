"""UserQA synthesis on the real MovieLens-100k and the synthetic dataset: volume, leakage, resume."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from components.ingestion import in_validation_holdout, ingest, read_dataset
from components.ingestion.contract import Table
from components.userqa.families import FAMILIES, GENERAL
from components.userqa.recorded import RECORDED
from components.userqa.synthesize import PARTS_DIR, USERQA_FILE, SynthesisConfig, synthesize
from components.userqa.writers import TemplateWriter
from tests.conftest import kill_when_parts

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def movielens(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ml")
    ingest(read_dataset("movielens-100k"), root / "data", root / "q", progress=False)
    return root / "data" / "movielens-100k"


def fresh_copy(folder: Path, dst: Path) -> Path:
    shutil.copytree(folder, dst, ignore=shutil.ignore_patterns("userqa*", PARTS_DIR))
    return dst


def test_movielens_template_volume_families_and_paraphrases(movielens, tmp_path):
    folder = fresh_copy(movielens, tmp_path / "ml")
    summary = synthesize(folder, TemplateWriter(), progress=False)
    df = pd.read_parquet(folder / USERQA_FILE)
    assert summary.records == len(df) >= 20_000 and summary.users == 566
    families = set(df["family"]) - {GENERAL}
    assert len(families) >= 8
    for fam in families:
        assert df.loc[df["family"] == fam, "instruction"].nunique() >= 5
    assert df.loc[df["family"] == GENERAL, "instruction"].isna().all()
    assert (df["answer"].str.len() > 0).all() and df["passed"].all()
    assert (folder / "userqa_tasks.json").exists()


def _poisoned(folder: Path, dst: Path) -> Path:
    """A copy where everything synthesis must not read carries a sentinel word."""
    from components.ingestion.contract import profile_mask

    dst = fresh_copy(folder, dst)
    users = pd.read_parquet(dst / "users.parquet")
    events = pd.read_parquet(dst / "events.parquet")
    cutoffs = pd.read_parquet(dst / "cutoffs.parquet")
    probe = set(users.loc[users["split"] == "probe", "user_id"])
    future = ~profile_mask(events, cutoffs)
    events.loc[events["user_id"].isin(probe), "genres"] = "Zzprobe"
    events.loc[future & ~events["user_id"].isin(probe), "genres"] = "Zzfuture"
    events.to_parquet(dst / "events.parquet")
    # demographics, tabular attributes and labels are never read: poison them all
    users = users.assign(
        gender="Zzdemo", age=-1, occupation="Zzdemo", n_ratings=-31337.0, mean_rating=7777.25
    )
    users.to_parquet(dst / "users.parquet")
    # labels: only the recorded family reads them, and only of training users outside the validation
    # holdout; flip everyone else's, which must change nothing
    labels = pd.read_parquet(dst / "labels.parquet")
    unread = labels["user_id"].isin(probe) | labels["user_id"].map(in_validation_holdout)
    labels.loc[unread, "label"] = 1 - labels.loc[unread, "label"]
    labels.to_parquet(dst / "labels.parquet")
    return dst


def test_no_probe_user_demographic_label_or_future_leaks(movielens, tmp_path):
    folder = _poisoned(movielens, tmp_path / "poisoned")
    synthesize(folder, TemplateWriter(), progress=False)
    df = pd.read_parquet(folder / USERQA_FILE)
    users = pd.read_parquet(folder / "users.parquet")
    assert not set(df["user_id"]) & set(users.loc[users["split"] == "probe", "user_id"])
    text = df["answer"] + " " + df["facts"] + " " + df["instruction"].fillna("")
    for sentinel in ("Zzprobe", "Zzdemo", "7777", "31337"):
        assert not text.str.contains(sentinel, regex=False).any(), sentinel
    future_families = {f.name for f in FAMILIES if f.window.value == "future"}
    recorded_users = set(df.loc[df["family"] == RECORDED, "user_id"])
    assert recorded_users and not any(in_validation_holdout(u) for u in recorded_users)
    mentions = df.loc[text.str.contains("Zzfuture", regex=False), "family"]
    assert set(mentions) <= future_families  # descriptive families never read the future window
    assert mentions.nunique() >= 1  # the poisoned future window does reach forward-looking families

    # and the output does not change when only never-read things change
    clean = fresh_copy(movielens, tmp_path / "clean")
    events = pd.read_parquet(folder / "events.parquet")
    pd.read_parquet(clean / "events.parquet").assign(genres=events["genres"]).to_parquet(
        clean / "events.parquet"
    )
    synthesize(clean, TemplateWriter(), progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(clean / USERQA_FILE), df)


def test_the_recorded_family_states_every_task_of_a_user_and_follows_the_labels(movielens, tmp_path):
    folder = fresh_copy(movielens, tmp_path / "ml")
    synthesize(folder, TemplateWriter(), SynthesisConfig(max_users=40), progress=False)
    df = pd.read_parquet(folder / USERQA_FILE)
    rec = df[df["family"] == RECORDED]
    user = int(rec["user_id"].iloc[0])
    answer = rec.loc[rec["user_id"] == user, "answer"].iloc[0]
    labels = pd.read_parquet(folder / "labels.parquet")
    mine = labels[labels["user_id"] == user]
    assert answer.count(".") == len(mine)  # one sentence per task
    flipped = fresh_copy(movielens, tmp_path / "flipped")
    at = (labels["user_id"] == user) & (labels["task"] == "age_under_25")
    labels.loc[at, "label"] = 1 - labels.loc[at, "label"]
    labels.to_parquet(flipped / "labels.parquet")
    synthesize(flipped, TemplateWriter(), SynthesisConfig(max_users=40), progress=False)
    again = pd.read_parquet(flipped / USERQA_FILE)
    other = again.loc[(again["family"] == RECORDED) & (again["user_id"] == user), "answer"].iloc[0]
    assert other != answer and ("Not so: the user is younger than 25" in other) != (
        "Not so: the user is younger than 25" in answer
    )
    off = fresh_copy(movielens, tmp_path / "off")
    synthesize(off, TemplateWriter(), SynthesisConfig(max_users=40, recorded_labels=False), progress=False)
    assert RECORDED not in set(pd.read_parquet(off / USERQA_FILE)["family"])


def test_deterministic_and_independent_of_chunking(movielens, tmp_path):
    a = fresh_copy(movielens, tmp_path / "a")
    b = fresh_copy(movielens, tmp_path / "b")
    synthesize(a, TemplateWriter(), SynthesisConfig(max_users=100, chunk_users=64), progress=False)
    synthesize(b, TemplateWriter(), SynthesisConfig(max_users=100, chunk_users=7), progress=False)
    assert (a / USERQA_FILE).read_bytes() == (b / USERQA_FILE).read_bytes()
    again = synthesize(a, TemplateWriter(), SynthesisConfig(max_users=100), progress=False)
    assert again.skipped  # a finished synthesis with the same key is not repeated


def test_killed_run_resumes_to_the_same_file(movielens, tmp_path):
    reference = fresh_copy(movielens, tmp_path / "reference")
    synthesize(reference, TemplateWriter(), SynthesisConfig(chunk_users=8), progress=False)

    folder = fresh_copy(movielens, tmp_path / "killed")
    code = (
        "import sys; from pathlib import Path; from components.userqa.synthesize import *; "
        "from components.userqa.writers import TemplateWriter; "
        "synthesize(Path(sys.argv[1]), TemplateWriter(), SynthesisConfig(chunk_users=8), progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=REPO)
    done = kill_when_parts(proc, folder / PARTS_DIR, at_least=20)
    assert 20 <= done < 71 and not (folder / USERQA_FILE).exists()

    summary = synthesize(folder, TemplateWriter(), SynthesisConfig(chunk_users=8), progress=False)
    assert summary.resumed_chunks == done  # only the missing chunks were answered again
    assert (folder / USERQA_FILE).read_bytes() == (reference / USERQA_FILE).read_bytes()
    assert not (folder / PARTS_DIR).exists()


def test_synthetic_dataset_gets_multi_source_families_and_never_reads_the_latent_trait(tmp_path):
    root = tmp_path
    ingest(read_dataset("synthetic-multisource", n_users=300), root / "data", root / "q", progress=False)
    folder = root / "data" / "synthetic-multisource"
    copy = fresh_copy(folder, tmp_path / "poisoned")
    events = pd.read_parquet(copy / Table.EVENTS.filename)
    events.assign(trait="Zztrait").to_parquet(copy / Table.EVENTS.filename)
    synthesize(folder, TemplateWriter(), progress=False)
    synthesize(copy, TemplateWriter(), progress=False)
    df = pd.read_parquet(folder / USERQA_FILE)
    assert {"source_mix", "value_habits", "favourite_terms", "future_terms"} <= set(df["family"])
    assert "era_preference" not in set(df["family"])  # no release years in this dataset
    pd.testing.assert_frame_equal(pd.read_parquet(copy / USERQA_FILE), df)
