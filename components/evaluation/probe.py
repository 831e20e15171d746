"""Linear-probe evaluation of frozen user embeddings (InstructUE paper, section 4.1).

Per downstream task, the labelled users are split 50% fitting / 50% evaluation (stratified), a
standardised logistic regression is fitted on the first half and scored on the second with AUC and
KS; the split is repeated over several seeds and the mean and standard deviation are reported.

    scores = probe_embeddings(read_embeddings(path), labels, users=probe_users)
    print(format_table(scores, title="movielens-100k, universal"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

DEFAULT_SEEDS = (0, 1, 2, 3, 4)


def ks_statistic(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic between the score distributions of positives and negatives.

    KS = max over thresholds t of |TPR(t) - FPR(t)|: the largest gap between the empirical CDFs of
    the negatives' and the positives' scores.
    """
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(np.max(np.abs(tpr - fpr)))


@dataclass(frozen=True)
class ProbeScore:
    """One task's probe result; `auc` and `ks` are means over `n_seeds` splits, `*_std` their spread."""

    task: str
    auc: float
    auc_std: float
    ks: float
    ks_std: float
    n_fit: int
    n_eval: int
    n_seeds: int

    def to_dict(self) -> dict[str, str | float | int]:
        return asdict(self)


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
    return X, y


def probe_task(
    X: np.ndarray,
    y: np.ndarray,
    task: str = "",
    seeds: Sequence[int] = DEFAULT_SEEDS,
    fit_fraction: float = 0.5,
    C: float = 1.0,
) -> ProbeScore:
    """Fit and score a logistic-regression probe on `X` -> `y` over one stratified split per seed.

    Args:
        X: (n_users, dim) embeddings.
        y: (n_users,) binary labels.
        task: name carried into the result and error messages.
        seeds: one split per seed (`random_state` of the split; the solver is deterministic).
        fit_fraction: share of users the probe is fitted on; the rest is evaluated.
        C: inverse L2 regularisation strength of the logistic regression.

    Returns:
        A `ProbeScore` with mean and standard deviation of AUC and KS over the seeds.

    Raises:
        ValueError: X is not 2-D, len(X) != len(y), y is not binary with both classes, or a class
            has fewer than 2 examples (no stratified split exists).
    """
    X, y = _check_xy(X, y, task)
    if not seeds:
        raise ValueError("seeds is empty; give at least one seed")
    aucs, kss = [], []
    n_fit = n_eval = 0
    for seed in seeds:
        X_fit, X_eval, y_fit, y_eval = train_test_split(
            X, y, train_size=fit_fraction, stratify=y, random_state=seed
        )
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        probe.fit(X_fit, y_fit)
        scores = probe.predict_proba(X_eval)[:, 1]
        aucs.append(roc_auc_score(y_eval, scores))
        kss.append(ks_statistic(y_eval, scores))
        n_fit, n_eval = len(y_fit), len(y_eval)
    return ProbeScore(
        task=task,
        auc=float(np.mean(aucs)),
        auc_std=float(np.std(aucs)),
        ks=float(np.mean(kss)),
        ks_std=float(np.std(kss)),
        n_fit=n_fit,
        n_eval=n_eval,
        n_seeds=len(seeds),
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
    **kw,
) -> list[ProbeScore]:
    """Probe every task of `labels` (or `tasks`, in that order) on one set of user embeddings.

    Args:
        embeddings: user_id -> vector, or the frame of `read_embeddings` filtered to one instruction.
        labels: the dataset's `labels.parquet`: `user_id`, `task`, `label` (0/1).
        tasks: tasks to probe; default every task in `labels`, sorted.
        users: restrict to these users (the dataset's probe users, `split == "probe"`).
        **kw: passed to `probe_task` (`seeds`, `fit_fraction`, `C`).

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
        X = np.stack([lookup[int(u)] for u in rows["user_id"]])
        y = rows["label"].to_numpy(dtype=np.int64)
        scores.append(probe_task(X, y, task=task, **kw))
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
