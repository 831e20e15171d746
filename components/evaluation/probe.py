"""Linear-probe evaluation of frozen user embeddings (InstructUE paper, section 4.1).

Per downstream task, the labelled users are split 50% fitting / 50% evaluation (stratified). On the
fitting half only, the features are standardised and a logistic regression is fitted, its inverse L2
strength C chosen by stratified k-fold cross-validation over a grid that reaches strong
regularisation (C = 1e-4: high-dimensional embeddings of a few hundred users need it). The fitted
probe scores the evaluation half with AUC and KS; the split is repeated over several seeds (default
10) and the mean and standard deviation are reported.

    scores = probe_embeddings(read_embeddings(path), labels, users=probe_users)
    print(format_table(scores, title="movielens-100k, universal"))

`fit_and_score` is the only place a probe is fitted; it takes the fitting half's labels and never
the evaluation half's, so a probe cannot see evaluation labels by construction. `always_fit` puts
given users in every fitting half (the few-shot users an instruction was tuned on), the halves
staying as close to `fit_fraction` as the strata allow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

DEFAULT_SEEDS = tuple(range(10))
DEFAULT_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)  # log-spaced, strong to weak regularisation
DEFAULT_FOLDS = 3
MAX_ITER = 1000


def ks_statistic(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic between the score distributions of positives and negatives.

    KS = max over thresholds t of |TPR(t) - FPR(t)|: the largest gap between the empirical CDFs of
    the negatives' and the positives' scores.
    """
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(np.max(np.abs(tpr - fpr)))


@dataclass(frozen=True)
class ProbeScore:
    """One task's probe result; `auc` and `ks` are means over `n_seeds` splits, `*_std` their spread.

    `C` is the median over seeds of the regularisation the cross-validation chose (or the fixed C).
    `roc` keeps the first seed's evaluation labels and scores, for ROC plots; it is not compared.
    """

    task: str
    auc: float
    auc_std: float
    ks: float
    ks_std: float
    n_fit: int
    n_eval: int
    n_seeds: int
    C: float = float("nan")
    roc: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)

    def __eq__(self, other: object) -> bool:  # nan-safe on C (a fixed-C probe and a CV one differ)
        if not isinstance(other, ProbeScore):
            return NotImplemented
        mine, theirs = self.to_dict(), other.to_dict()
        c1, c2 = mine.pop("C"), theirs.pop("C")
        same_c = (np.isnan(c1) and np.isnan(c2)) or c1 == c2
        return mine == theirs and same_c

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, str | float | int]:
        d = asdict(self)
        d.pop("roc")
        return d


def _check_xy(X: np.ndarray, y: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X), np.asarray(y)
    where = f" for task {task!r}" if task else ""
    if X.ndim != 2:
        raise ValueError(f"X{where} must be 2-D (n_users, dim), got shape {X.shape}")
    if len(X) != len(y):
        raise ValueError(f"X and y{where} differ in length: {len(X)} rows of X, {len(y)} labels")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(
            f"y{where} has a single class {classes.tolist()}; a probe needs positives and negatives"
        )
    if len(classes) > 2:
        raise ValueError(f"y{where} must be binary, got classes {classes.tolist()}")
    if counts.min() < 2:
        rare = classes[counts.argmin()]
        raise ValueError(
            f"class {rare!r}{where} has {counts.min()} example(s); a stratified split needs at least 2"
        )
    if not np.isfinite(X).all():
        raise ValueError(f"X{where} holds NaN or infinite values; impute or drop those users first")
    return X, y


def split_halves(
    y: np.ndarray, seed: int, fit_fraction: float = 0.5, always_fit: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified fitting / evaluation indices for one seed.

    Per class c with n_c users, round(fit_fraction * n_c) users go to the fitting half (at least one
    and at most n_c - 1, so both halves hold both classes). Users flagged in `always_fit` are placed
    there first; the rest of the class's quota is drawn at random among the others. If a class has
    more forced users than its quota, all of them are fitted and the halves tilt accordingly.

    Args:
        y: (n,) binary labels (only used to stratify: the split itself sees no features).
        seed: the split's random state.
        fit_fraction: share of each class in the fitting half, in (0, 1).
        always_fit: (n,) bool, users that must be in the fitting half.

    Returns:
        (fit_idx, eval_idx), sorted, disjoint, covering range(n).

    Raises:
        ValueError: fit_fraction outside (0, 1), or forced users leave a class no evaluation user.
    """
    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    y = np.asarray(y)
    forced = np.zeros(len(y), bool) if always_fit is None else np.asarray(always_fit, bool)
    if forced.shape != y.shape:
        raise ValueError(f"always_fit has shape {forced.shape}, labels {y.shape}")
    rng = np.random.default_rng(seed)
    fit = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        quota = int(np.clip(round(fit_fraction * len(members)), 1, len(members) - 1))
        pinned = members[forced[members]]
        if len(pinned) >= len(members):
            raise ValueError(
                f"every user of class {c!r} is in always_fit; no evaluation user of that class is "
                f"left (fewer few-shot users per class, or more labelled users)"
            )
        free = members[~forced[members]]
        extra = max(quota - len(pinned), 0)
        fit.extend(pinned.tolist())
        fit.extend(rng.choice(free, size=extra, replace=False).tolist())
    fit_idx = np.sort(np.asarray(fit, dtype=np.int64))
    eval_idx = np.setdiff1d(np.arange(len(y)), fit_idx)
    return fit_idx, eval_idx


def _standardise(X_fit: np.ndarray, X_eval: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise with the fitting half's statistics; then, when dim > n_fit, rotate both halves
    onto the fitting rows' span (n_fit coordinates).

    The rotation is exact for an L2-penalised logistic regression: its weights are a combination of
    the fitting rows (the stationarity condition w = C * sum_i (y_i - p_i) x_i), so every fold's
    solution, and a score x . w of any user, is unchanged; the solver just works in fewer dimensions.
    """
    mu = X_fit.mean(0)
    sd = X_fit.std(0)
    sd[sd == 0] = 1.0
    X_fit, X_eval = (X_fit - mu) / sd, (X_eval - mu) / sd
    if X_fit.shape[1] > X_fit.shape[0]:
        _, s, vt = np.linalg.svd(X_fit, full_matrices=False)
        basis = vt[s > s.max() * 1e-10].T
        X_fit, X_eval = X_fit @ basis, X_eval @ basis
    return X_fit, X_eval


def fit_and_score(
    X_fit: np.ndarray,
    y_fit: np.ndarray,
    X_eval: np.ndarray,
    seed: int = 0,
    C: float | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    folds: int = DEFAULT_FOLDS,
) -> tuple[np.ndarray, float]:
    """Fit a standardised logistic regression on the fitting half and score the evaluation half.

    Only the fitting half's labels go in; the evaluation half is features only.

    Args:
        X_fit, y_fit: the fitting half.
        X_eval: the evaluation half's features.
        seed: shuffles the cross-validation folds.
        C: a fixed inverse L2 strength; None chooses it from `Cs` by `folds`-fold stratified
            cross-validation on the fitting half (scored by AUC, as the probe is).
        Cs: the grid of C values.
        folds: cross-validation folds (fewer when a class of the fitting half is smaller).

    Returns:
        (P(y=1) for each evaluation user, the C used).
    """
    X_fit, X_eval = _standardise(np.asarray(X_fit, np.float64), np.asarray(X_eval, np.float64))
    k = min(folds, int(np.bincount(np.asarray(y_fit, np.int64)).min()))
    if C is not None or k < 2:
        chosen = float(C) if C is not None else 1.0
        model = LogisticRegression(C=chosen, max_iter=MAX_ITER).fit(X_fit, y_fit)
    else:
        model = LogisticRegressionCV(
            Cs=list(Cs), l1_ratios=(0.0,), cv=StratifiedKFold(k, shuffle=True, random_state=seed),
            scoring="roc_auc", solver="lbfgs", max_iter=MAX_ITER, use_legacy_attributes=False,
        ).fit(X_fit, y_fit)  # fmt: skip
        chosen = float(np.ravel(model.C_)[0])
    return model.predict_proba(X_eval)[:, 1], chosen


def probe_task(
    X: np.ndarray,
    y: np.ndarray,
    task: str = "",
    seeds: Sequence[int] = DEFAULT_SEEDS,
    fit_fraction: float = 0.5,
    C: float | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    folds: int = DEFAULT_FOLDS,
    always_fit: np.ndarray | None = None,
) -> ProbeScore:
    """Fit and score a logistic-regression probe on `X` -> `y` over one stratified split per seed.

    Args:
        X: (n_users, dim) embeddings.
        y: (n_users,) binary labels.
        task: name carried into the result and error messages.
        seeds: one split (and one cross-validation shuffle) per seed.
        fit_fraction: share of users the probe is fitted on; the rest is evaluated.
        C: a fixed inverse L2 strength; None (default) chooses it per seed by cross-validation on
            the fitting half over `Cs`.
        Cs, folds: the cross-validation grid and its number of folds.
        always_fit: (n_users,) bool; these users are in every fitting half, never evaluated.

    Returns:
        A `ProbeScore` with mean and standard deviation of AUC and KS over the seeds.

    Raises:
        ValueError: X is not 2-D or not finite, len(X) != len(y), y is not binary with both classes,
            or a class has fewer than 2 examples (no stratified split exists).
    """
    X, y = _check_xy(X, y, task)
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    aucs, kss, chosen = [], [], []
    n_fit = n_eval = 0
    roc = None
    for seed in seeds:
        fit, held = split_halves(y, seed, fit_fraction, always_fit)
        # one BLAS thread: these problems are small, and threads fighting over a few shared cores made
        # a probe about 9x slower here
        with threadpool_limits(1):
            scores, c = fit_and_score(X[fit], y[fit], X[held], seed=seed, C=C, Cs=Cs, folds=folds)
        y_eval = y[held]
        aucs.append(roc_auc_score(y_eval, scores))
        kss.append(ks_statistic(y_eval, scores))
        chosen.append(c)
        n_fit, n_eval = len(fit), len(held)
        if roc is None:
            roc = (y_eval.copy(), scores)
    return ProbeScore(
        task=task,
        auc=float(np.mean(aucs)),
        auc_std=float(np.std(aucs)),
        ks=float(np.mean(kss)),
        ks_std=float(np.std(kss)),
        n_fit=n_fit,
        n_eval=n_eval,
        n_seeds=len(seeds),
        C=float(np.median(chosen)),
        roc=roc,
    )


def _embedding_lookup(embeddings: dict[int, np.ndarray] | pd.DataFrame) -> dict[int, np.ndarray]:
    """user_id -> vector, from a dict or from `read_embeddings`' frame (user_id, instruction, embedding)."""
    if isinstance(embeddings, dict):
        return {int(u): np.asarray(v) for u, v in embeddings.items()}
    missing = {"user_id", "embedding"} - set(embeddings.columns)
    if missing:
        raise ValueError(
            f"embeddings frame lacks column(s) {sorted(missing)}; expected the frame of "
            f"components.modeling.embed.read_embeddings, got columns {list(embeddings.columns)}"
        )
    if "instruction" in embeddings.columns:
        instructions = embeddings["instruction"].drop_duplicates().tolist()
        if len(instructions) > 1:
            raise ValueError(
                f"embeddings hold {len(instructions)} instructions {instructions[:5]}; probe one at a "
                f"time: filter the frame to one instruction first (null is the universal embedding)"
            )
    duplicated = embeddings["user_id"][embeddings["user_id"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"embeddings hold several rows for user id(s) {duplicated[:10].tolist()}")
    return {
        int(u): np.asarray(v) for u, v in zip(embeddings["user_id"], embeddings["embedding"], strict=True)
    }


def probe_embeddings(
    embeddings: dict[int, np.ndarray] | pd.DataFrame,
    labels: pd.DataFrame,
    tasks: list[str] | None = None,
    users: list[int] | None = None,
    always_fit: dict[str, Sequence[int]] | None = None,
    **kw,
) -> list[ProbeScore]:
    """Probe every task of `labels` (or `tasks`, in that order) on one set of user embeddings.

    Args:
        embeddings: user_id -> vector, or the frame of `read_embeddings` filtered to one instruction.
        labels: the dataset's `labels.parquet`: `user_id`, `task`, `label` (0/1).
        tasks: tasks to probe; default every task in `labels`, sorted.
        users: restrict to these users (the dataset's probe users, `split == "probe"`).
        always_fit: task -> user ids that must be in every fitting half of that task.
        **kw: passed to `probe_task` (`seeds`, `fit_fraction`, `C`, `Cs`, `folds`).

    Returns:
        One `ProbeScore` per task, in task order.

    Raises:
        ValueError: a task is not in `labels`, a labelled user has no embedding, the frame holds
            several instructions, or a task cannot be probed (see `probe_task`).
    """
    missing = {"user_id", "task", "label"} - set(labels.columns)
    if missing:
        raise ValueError(f"labels lack column(s) {sorted(missing)}; expected user_id, task, label")
    lookup = _embedding_lookup(embeddings)
    if users is not None:
        labels = labels[labels["user_id"].isin([int(u) for u in users])]
    known = sorted(labels["task"].astype(str).unique())
    if tasks is None:
        tasks = known
    unknown = [t for t in tasks if t not in set(known)]
    if unknown:
        raise ValueError(f"task(s) {unknown} have no labels (among the selected users); known: {known}")
    labels = labels[labels["task"].isin(tasks)]

    absent = sorted({int(u) for u in labels["user_id"]} - set(lookup))
    if absent:
        raise ValueError(
            f"{len(absent)} labelled user(s) have no embedding, e.g. {absent[:10]}; embed every probe "
            f"user or pass `users` to restrict the probe"
        )

    scores = []
    for task in tasks:
        rows = labels[labels["task"] == task]
        ids = rows["user_id"].astype(int).to_numpy()
        X = np.stack([lookup[int(u)] for u in ids])
        y = rows["label"].to_numpy(dtype=np.int64)
        forced = None
        if always_fit and always_fit.get(task):
            pinned = {int(u) for u in always_fit[task]}
            forced = np.isin(ids, list(pinned))
            if forced.sum() != len(pinned):
                stray = sorted(pinned - set(ids.tolist()))[:10]
                raise ValueError(f"always_fit users {stray} of task {task!r} have no label for it")
        scores.append(probe_task(X, y, task=task, always_fit=forced, **kw))
    return scores


def mean_auc(scores: Sequence[ProbeScore]) -> float:
    """Unweighted mean of the tasks' AUCs (each task counts once, whatever its size)."""
    if not scores:
        raise ValueError("no probe scores to average")
    return float(np.mean([s.auc for s in scores]))


def format_table(scores: Sequence[ProbeScore], title: str | None = None) -> str:
    """A markdown table: task | AUC | ± | KS | n_fit | n_eval, closed by the mean over tasks."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| task | AUC | ± | KS | n_fit | n_eval |", "|---|---:|---:|---:|---:|---:|"]
    for s in scores:
        lines.append(f"| {s.task} | {s.auc:.4f} | {s.auc_std:.4f} | {s.ks:.4f} | {s.n_fit} | {s.n_eval} |")
    if scores:
        ks = float(np.mean([s.ks for s in scores]))
        lines.append(f"| **mean** | {mean_auc(scores):.4f} |  | {ks:.4f} |  |  |")
    return "\n".join(lines)
