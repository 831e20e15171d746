"""Linear probe: AUC and KS on hand-computed examples, the probe's extremes (separable -> 1,
noise -> 0.5), determinism, error messages, the join of embeddings (dict or `read_embeddings` frame)
to labels, cross-validated C, forced fitting users, and that evaluation labels never reach a fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import components.evaluation.probe as probe_module
from components.evaluation.probe import (
    DEFAULT_CS,
    ProbeScore,
    fit_and_score,
    format_table,
    ks_statistic,
    mean_auc,
    probe_embeddings,
    probe_task,
    split_halves,
)
from components.modeling.embed import read_embeddings, write_embeddings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "y, scores, expected",
    [
        # negatives {.1, .4}, positives {.35, .8}: at t=.8 TPR-FPR = 1/2 - 0; at t=.35 1 - 1/2
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.5),
        # at t=.7: TPR 2/3, FPR 0; at t=.3: TPR 1, FPR 1/3
        ([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.6, 0.3, 0.7, 0.9], 2 / 3),
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),
        # inverted scores: |TPR - FPR| still reaches 1
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 1.0),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.0),
    ],
)
def test_ks_statistic_matches_hand_computed_examples(y, scores, expected):
    assert ks_statistic(np.array(y), np.array(scores)) == pytest.approx(expected)


def test_ks_statistic_equals_two_sample_ks():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + 0.7 * y
    assert ks_statistic(y, scores) == pytest.approx(ks_2samp(scores[y == 1], scores[y == 0]).statistic)


def separable(n: int = 200, dim: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    X = rng.normal(size=(n, dim))
    X[:, 0] += 10.0 * (2 * y - 1)
    return X, y


def test_separable_data_gives_auc_and_ks_of_one():
    X, y = separable()
    score = probe_task(X, y, task="sep")
    assert score.auc == pytest.approx(1.0) and score.ks == pytest.approx(1.0)
    assert score.auc_std == pytest.approx(0.0) and score.ks_std == pytest.approx(0.0)
    assert (score.task, score.n_fit, score.n_eval, score.n_seeds) == ("sep", 100, 100, 10)


def test_random_features_give_auc_near_one_half():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(2000, 8)), rng.integers(0, 2, 2000)
    score = probe_task(X, y, seeds=range(10))
    assert abs(score.auc - 0.5) < 0.05
    assert score.ks < 0.15


def test_fit_fraction_sets_split_sizes():
    X, y = separable(n=100)
    score = probe_task(X, y, fit_fraction=0.3, seeds=(0,))
    assert (score.n_fit, score.n_eval, score.n_seeds) == (30, 70, 1)


def test_same_seeds_give_identical_scores_and_other_seeds_differ():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] + rng.normal(size=300) > 0).astype(int)
    assert probe_task(X, y, seeds=(3, 4)) == probe_task(X, y, seeds=(3, 4))
    assert probe_task(X, y, seeds=(3, 4)) != probe_task(X, y, seeds=(5, 6))


@pytest.mark.parametrize(
    "X, y, match",
    [
        (np.zeros((6, 2)), np.ones(6), "single class"),
        (np.zeros((6, 2)), np.array([0, 1, 0, 1, 0]), "differ in length"),
        (np.zeros((6, 2)), np.array([0, 0, 0, 0, 0, 1]), "1 example"),
        (np.zeros((6, 2)), np.array([0, 1, 2, 0, 1, 2]), "binary"),
        (np.zeros(6), np.array([0, 1, 0, 1, 0, 1]), "2-D"),
    ],
)
def test_probe_task_rejects_unprobeable_inputs(X, y, match):
    with pytest.raises(ValueError, match=match):
        probe_task(X, y, task="t")


def test_probe_task_names_the_task_in_errors():
    with pytest.raises(ValueError, match="'gender'"):
        probe_task(np.zeros((4, 2)), np.zeros(4), task="gender")


# --- probe_embeddings: one strong task, one noise task, on 200 users -------------------------------

N_USERS, DIM = 200, 5


@pytest.fixture
def data() -> tuple[dict[int, np.ndarray], pd.DataFrame]:
    rng = np.random.default_rng(7)
    ids = np.arange(1000, 1000 + N_USERS)
    X = rng.normal(size=(N_USERS, DIM)).astype(np.float32)
    strong = (X[:, 0] > 0).astype(np.int8)
    noise = rng.integers(0, 2, N_USERS).astype(np.int8)
    labels = pd.concat(
        [
            pd.DataFrame({"user_id": ids, "task": "strong", "label": strong}),
            pd.DataFrame({"user_id": ids, "task": "noise", "label": noise}),
        ],
        ignore_index=True,
    )
    return dict(zip(ids.tolist(), X, strict=True)), labels


def embeddings_frame(tmp_path, vectors: dict[int, np.ndarray], instructions=(None,)) -> pd.DataFrame:
    ids = list(vectors)
    matrix = np.stack([vectors[u] for u in ids])
    path = write_embeddings(tmp_path / "embeddings.parquet", ids, {i: matrix for i in instructions})
    return read_embeddings(path)


def test_probe_embeddings_from_dict_and_frame_agree(tmp_path, data):
    vectors, labels = data
    from_dict = probe_embeddings(vectors, labels, seeds=(0, 1))
    from_frame = probe_embeddings(embeddings_frame(tmp_path, vectors), labels, seeds=(0, 1))
    assert from_dict == from_frame
    assert [s.task for s in from_dict] == ["noise", "strong"]
    noise, strong = from_dict
    assert strong.auc > 0.95 and strong.ks > 0.8
    assert noise.auc < 0.75
    assert (strong.n_fit, strong.n_eval) == (N_USERS // 2, N_USERS // 2)


def test_probe_embeddings_keeps_the_order_of_tasks_given(data):
    vectors, labels = data
    assert [s.task for s in probe_embeddings(vectors, labels, tasks=["strong", "noise"], seeds=(0,))] == [
        "strong",
        "noise",
    ]


def test_probe_embeddings_respects_the_users_filter(data):
    vectors, labels = data
    probe_users = list(vectors)[:60]
    # users outside the filter need no embedding
    kept = {u: vectors[u] for u in probe_users}
    (score,) = probe_embeddings(kept, labels, tasks=["strong"], users=probe_users, seeds=(0,))
    assert score.n_fit + score.n_eval == 60


def test_probe_embeddings_names_users_without_embedding(data):
    vectors, labels = data
    partial = {u: v for u, v in vectors.items() if u not in (1003, 1007, 1011)}
    with pytest.raises(
        ValueError, match=r"3 labelled user\(s\) have no embedding, e.g. \[1003, 1007, 1011\]"
    ):
        probe_embeddings(partial, labels)


def test_probe_embeddings_requires_one_instruction(tmp_path, data):
    vectors, labels = data
    frame = embeddings_frame(tmp_path, vectors, instructions=(None, "Will this user churn?"))
    with pytest.raises(ValueError, match="2 instructions"):
        probe_embeddings(frame, labels)
    universal = frame[frame["instruction"].isna()]
    assert len(probe_embeddings(universal, labels, seeds=(0,))) == 2


def test_probe_embeddings_rejects_unknown_tasks(data):
    vectors, labels = data
    with pytest.raises(ValueError, match="'churn'"):
        probe_embeddings(vectors, labels, tasks=["churn"])


def test_mean_auc_and_table():
    scores = [
        ProbeScore("a", auc=0.8, auc_std=0.01, ks=0.5, ks_std=0.02, n_fit=50, n_eval=50, n_seeds=5),
        ProbeScore("b", auc=0.6, auc_std=0.03, ks=0.3, ks_std=0.04, n_fit=40, n_eval=40, n_seeds=5),
    ]
    assert mean_auc(scores) == pytest.approx(0.7)
    table = format_table(scores, title="tiny")
    assert table.splitlines()[0] == "### tiny"
    assert "| a | 0.8000 | 0.0100 | 0.5000 | 50 | 50 |" in table
    assert table.splitlines()[-1].startswith("| **mean** | 0.7000 |")
    assert scores[0].to_dict()["auc"] == 0.8


@pytest.mark.parametrize(
    "y, scores, expected",
    [
        # pairs (pos, neg) ranked right: (.35>.1), (.8>.1), (.8>.4); wrong: (.35<.4) -> 3/4
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
        # 9 pairs; wrong: (.3 < .6) only -> 8/9
        ([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.6, 0.3, 0.7, 0.9], 8 / 9),
        # ties count one half: 4 tied pairs -> 1/2
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),
    ],
)
def test_auc_matches_hand_computed_examples(y, scores, expected):
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(np.array(y), np.array(scores)) == pytest.approx(expected)


# --- splits, cross-validated C, and what the fit may see -------------------------------------------


def test_split_halves_are_stratified_disjoint_and_half_each():
    y = np.array([0] * 70 + [1] * 30)
    fit, held = split_halves(y, seed=0)
    assert len(np.intersect1d(fit, held)) == 0 and len(fit) + len(held) == 100
    assert (y[fit] == 1).sum() == 15 and (y[fit] == 0).sum() == 35


def test_always_fit_users_are_never_evaluated_and_halves_stay_even():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(int)
    forced = np.zeros(300, bool)
    forced[np.flatnonzero(y == 1)[:16]] = True
    forced[np.flatnonzero(y == 0)[:16]] = True
    for seed in range(10):
        fit, held = split_halves(y, seed, always_fit=forced)
        assert forced[fit].sum() == 32 and not forced[held].any()
        assert abs(len(fit) - 150) <= 1


def test_always_fit_cannot_take_every_user_of_a_class():
    y = np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="no evaluation user"):
        split_halves(y, 0, always_fit=np.array([0, 0, 0, 1, 1, 1], bool))


def test_the_fit_only_ever_sees_fitting_half_labels(monkeypatch):
    """A spy on the one fitting function: its labels are exactly the fitting half's, its evaluation
    input holds no labels, and poisoning the evaluation half's labels cannot change the probe."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 6))
    y = (X[:, 0] + rng.normal(size=120) > 0).astype(int)
    calls = []
    real = probe_module.fit_and_score

    def spy(X_fit, y_fit, X_eval, **kw):
        calls.append((X_fit.copy(), y_fit.copy(), X_eval.copy()))
        return real(X_fit, y_fit, X_eval, **kw)

    monkeypatch.setattr(probe_module, "fit_and_score", spy)
    probe_task(X, y, seeds=(0, 1, 2))
    assert len(calls) == 3
    for seed, (X_fit, y_fit, X_eval) in zip((0, 1, 2), calls, strict=True):
        fit, held = split_halves(y, seed)
        np.testing.assert_array_equal(X_fit, X[fit])
        np.testing.assert_array_equal(y_fit, y[fit])
        np.testing.assert_array_equal(X_eval, X[held])
    # poisoned evaluation labels: same fitted scores for the same split
    fit, held = split_halves(y, 0)
    poisoned = y.copy()
    poisoned[held] = 1 - poisoned[held]
    clean_scores, c1 = real(X[fit], y[fit], X[held], seed=0)
    dirty_scores, c2 = real(X[fit], poisoned[fit], X[held], seed=0)
    np.testing.assert_array_equal(clean_scores, dirty_scores)
    assert c1 == c2


def test_cross_validation_picks_strong_regularisation_for_noise_in_many_dimensions():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 400))
    y = (X[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int)
    score = probe_task(X, y, seeds=(0, 1, 2))
    assert min(DEFAULT_CS) == 1e-4 and score.C in DEFAULT_CS
    assert score.C <= 1e-2  # one informative column among 400: weak regularisation overfits
    assert score.auc > probe_task(X, y, seeds=(0, 1, 2), C=10.0).auc


def test_rotation_onto_the_fitting_rows_is_exact():
    """dim > n_fit: the probe works in the fitting rows' span; the scores equal a plain fit's."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 200))
    y = (X[:, 0] > 0).astype(int)
    fit, held = np.arange(30), np.arange(30, 60)
    scores, _ = fit_and_score(X[fit], y[fit], X[held], C=0.05)
    mu, sd = X[fit].mean(0), X[fit].std(0)
    plain = LogisticRegression(C=0.05, max_iter=5000, tol=1e-10).fit((X[fit] - mu) / sd, y[fit])
    np.testing.assert_allclose(scores, plain.predict_proba((X[held] - mu) / sd)[:, 1], atol=1e-3)


def test_probe_embeddings_forces_always_fit_users_per_task(data):
    vectors, labels = data
    pinned = list(vectors)[:20]
    (score,) = probe_embeddings(vectors, labels, tasks=["strong"], always_fit={"strong": pinned}, seeds=(0,))
    assert score.n_fit + score.n_eval == N_USERS
    with pytest.raises(ValueError, match="have no label"):
        probe_embeddings(vectors, labels, tasks=["strong"], always_fit={"strong": [1]}, seeds=(0,))
