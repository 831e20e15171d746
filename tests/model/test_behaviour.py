"""Behavioural tests of a trained model (Made-With-ML style): paraphrased instructions give closer
embeddings than unrelated ones; a user's embedding does not depend on the other users of its batch.

They run on the quick profile's model (`instructue train --profile quick`), by default
`runs/quick-tmole-s2sched/model`, or the folder in INSTRUCTUE_BEHAVIOUR_MODEL, over the ingested
`data/movielens-100k`; they skip, saying why, when either is missing. Slow: real default models.

    .venv/bin/pytest tests/model -m slow
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MODEL = Path(os.environ.get("INSTRUCTUE_BEHAVIOUR_MODEL", ROOT / "runs/quick-tmole-s2sched/model"))
DATA = ROOT / "data/movielens-100k"

ANCHOR = "Will this user soon watch and enjoy a science-fiction film?"  # next4_scifi_liked's instruction
PARAPHRASES = [
    "Is this user about to watch a sci-fi movie and like it?",
    "Will this person soon see a science fiction film and enjoy it?",
]
UNRELATED = [
    "Is this user likely to be a student, judging by what they watch and when?",
    "Is this user more likely to be a woman than a man, judging by the films they watch?",
]
N_USERS = 48


@pytest.fixture(scope="module")
def embedder():
    if not (MODEL / "model.json").is_file():
        pytest.skip(
            f"no trained model at {MODEL}: run `instructue train --profile quick --run-dir "
            "runs/quick-tmole-s2sched` (or set INSTRUCTUE_BEHAVIOUR_MODEL to a model folder)"
        )
    if not (DATA / "users.parquet").is_file():
        pytest.skip(f"{DATA} is not ingested: run `instructue ingest --dataset movielens-100k`")
    from components.ingestion.contract import read_tables
    from components.modeling.embed import UserEmbedder
    from components.modeling.factory import load_model

    card, tables = read_tables(DATA)
    return UserEmbedder(load_model(MODEL), card, tables)


@pytest.fixture(scope="module")
def users(embedder) -> list[int]:
    probe = embedder.tables.users
    ids = probe[probe["split"] == "probe"]["user_id"].astype(int).to_numpy()
    return np.random.default_rng(0).choice(ids, size=min(N_USERS, len(ids)), replace=False).tolist()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (the embeddings are L2-normalised already)."""
    return np.sum(a * b, axis=1)


def test_paraphrases_are_closer_than_unrelated_instructions(embedder, users):
    out = embedder.embed_many(users, [ANCHOR, *PARAPHRASES, *UNRELATED])
    para = np.stack([_cos(out[ANCHOR], out[p]) for p in PARAPHRASES])  # (n_para, n_users)
    unrel = np.stack([_cos(out[ANCHOR], out[u]) for u in UNRELATED])
    # on average over users, every paraphrase is closer to the anchor than every unrelated instruction
    assert para.mean(1).min() > unrel.mean(1).max(), (para.mean(1), unrel.mean(1))
    # and for most users individually
    assert (para.min(0) > unrel.max(0)).mean() >= 0.75, (para.min(0) > unrel.max(0)).mean()


@pytest.mark.parametrize("instruction", [None, ANCHOR])
def test_a_users_embedding_does_not_depend_on_its_batch(embedder, users, instruction):
    user = users[0]
    alone = embedder.embed([user], instruction)[0]
    # the same user among others of different history lengths, in two batch sizes
    for batch_size in (4, 16):
        batched = embedder.embed(users[:16], instruction, batch_size=batch_size)[0]
        assert float(alone @ batched) > 0.999, (batch_size, float(alone @ batched))
        assert np.abs(alone - batched).max() < 2e-2
