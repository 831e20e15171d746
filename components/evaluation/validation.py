"""The validation probe: the score that picks among a run's candidate models (RecFound 4.4's "keep the
merged model only if it is better").

It probes the *training* users, never the probe users, so choosing a model does not touch the users
the final evaluation reports on; and of them only the validation holdout
(`ingestion.in_validation_holdout`, a third fixed by id), whose labels UserQA's recorded family never
states, so a candidate is not scored on users whose labels it was trained on. Per task of the
dataset card, a linear probe (`probe.probe_task`) on those users' labels, universal and under the
task's manual instruction; the score is the mean of the two mean AUCs.

Caveat, plainly: the model was trained on UserQA records of these users, and forward-looking UserQA
answers use the same future window as the labels. A candidate that memorised its training users more
closely is favoured a little; the merged model (an average of checkpoints) is never favoured by this.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from components.evaluation.probe import mean_auc, probe_embeddings
from components.ingestion import labelled_training_users

# a floor against an empty or degenerate probe, not a bar for a trustworthy one: the holdout is a
# third of the training users, so small test datasets have a dozen; MovieLens-100k has 173
MIN_USERS = 12


@dataclass(frozen=True)
class ValidationScore:
    universal: float  # mean AUC over the card's tasks, no instruction
    manual: float  # mean AUC, each task under its manual instruction
    n_users: int
    embed_s: float

    @property
    def score(self) -> float:
        return (self.universal + self.manual) / 2

    def to_dict(self) -> dict:
        return {**asdict(self), "score": self.score}


def validation_users(tables, limit: int | None = None) -> list[int]:
    """Training users of the validation holdout that carry probe labels (sorted); with `limit`, that
    many of them spread evenly over the sorted list (deterministic: every candidate of a run is scored
    on the same users)."""
    users = labelled_training_users(tables, holdout=True)
    if len(users) < MIN_USERS:
        raise ValueError(
            f"the validation probe needs labelled training users in the validation holdout (a third "
            f"of the training users); found {len(users)} (labels.parquet labels only the probe users?)"
        )
    if limit is not None and limit < len(users):
        if limit < MIN_USERS:
            raise ValueError(
                f"validation users limit={limit}: a probe over fewer than {MIN_USERS} users means nothing"
            )
        users = [users[i] for i in np.linspace(0, len(users) - 1, limit).round().astype(int)]
    return users


def validation_probe(
    model_dir: Path,
    card,
    tables,
    seeds: Sequence[int] = (0, 1, 2),
    progress: bool = False,
    max_users: int | None = None,
) -> ValidationScore:
    """Embed the training users (at most `max_users`, see `validation_users`) with the model in
    `model_dir` and probe the card's tasks."""
    import time

    from components.modeling import UserEmbedder, load_model

    users = validation_users(tables, max_users)
    instructions = [card.task(t.name).instruction for t in card.tasks]
    embedder = UserEmbedder(load_model(Path(model_dir)), card, tables)
    t0 = time.perf_counter()
    vectors = embedder.embed_many(users, [None, *instructions], progress=progress)
    embed_s = time.perf_counter() - t0
    universal, manual = probe_variants(card, tables.labels, users, vectors, seeds)
    return ValidationScore(universal, manual, len(users), round(embed_s, 1))


def validation_scorer(
    card, tables, seeds: Sequence[int], max_users: int | None = None, progress: bool = False
) -> Callable[[Path], tuple[float, dict]]:
    """The score `merging.select.merge_and_select` wants: a model folder -> (validation score, the
    full `ValidationScore` record)."""

    def score(folder: Path) -> tuple[float, dict]:
        got = validation_probe(folder, card, tables, seeds, progress=progress, max_users=max_users)
        return got.score, got.to_dict()

    return score


def probe_variants(
    card, labels, users: list[int], vectors: dict, seeds: Sequence[int]
) -> tuple[float, float]:
    """(universal, manual) mean AUC over the card's tasks; `vectors` maps an instruction (None: none)
    to an (n_users, dim) array in `users` order."""
    tasks = [t.name for t in card.tasks]
    seeds = tuple(seeds)
    universal = probe_embeddings(
        dict(zip(users, vectors[None], strict=True)), labels, tasks, users, seeds=seeds
    )
    manual = []
    for t in tasks:
        by_user = dict(zip(users, vectors[card.task(t).instruction], strict=True))
        manual += probe_embeddings(by_user, labels, [t], users, seeds=seeds)
    return mean_auc(universal), mean_auc(manual)
