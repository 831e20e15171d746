"""The `recorded` family: UserQA answered from the training users' recorded labels (issue 26).

InstructUE 3.2 builds UserQA along two axes: stable user attributes and future behaviour. The
behaviour families (`families.py`) read events only; this one states what is *recorded* about a
user, from `labels.parquet`: per training user, one answer that says every task of the dataset card
as a sentence ("The user is younger than 25." or "Not so: the user is younger than 25."), asked
under a few paraphrased instructions.

Whose labels: training users only, and of them not the validation holdout
(`ingestion.in_validation_holdout`, a third fixed by id), which the validation probe reads when it
picks among a run's models. Probe users' labels are never read. One answer states all tasks
because in-task InfoNCE contrasts users under one instruction: a yes/no family per task would give
groups of identical answers, which have no negatives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.ingestion import labelled_training_users
from components.userqa.families import Family
from components.userqa.records import AnswerRequest, Facts, Window
from components.userqa.writers import reference_answer

RECORDED = "recorded"
RECORDED_TASK_ID = 12  # after the behaviour families' ids (families.py: never renumber)
RECORDED_KIND = "attribute"
PARAPHRASES = (
    "What is recorded about this user, and what will they do next?",
    "Summarise what is known about this user from their records.",
    "Describe this user's recorded attributes and coming behaviour.",
    "What do this user's records say about who they are?",
    "Tell me the recorded facts about this user.",
    "Who is this user according to their records, and what comes next for them?",
)

FAMILY = Family(RECORDED, RECORDED_TASK_ID, RECORDED_KIND, Window.FUTURE, PARAPHRASES,
                facts=lambda user, df, view: None)  # answered from labels, not from events  # fmt: skip


def statement(description: str, label: int) -> str:
    """A task's description as a sentence true of the user: as it is for 1, negated for 0."""
    text = description.strip().rstrip(".")
    return f"{text}." if label else f"Not so: {text[:1].lower()}{text[1:]}."


def recorded_facts(card, tables) -> dict[int, Facts]:
    """user -> the facts of the recorded family (every card task the user has a label for)."""
    users = labelled_training_users(tables, holdout=False)
    labels = tables.labels[tables.labels["user_id"].astype(int).isin(users)]
    wide = labels.pivot_table(index="user_id", columns="task", values="label", aggfunc="first")
    out = {}
    for user, row in wide.iterrows():
        statements = [statement(t.description, int(row[t.name])) for t in card.tasks
                      if t.name in row.index and pd.notna(row[t.name])]  # fmt: skip
        if statements:
            out[int(user)] = Facts(int(user), RECORDED, Window.FUTURE, tuple(statements))
    return out


def recorded_requests(user: int, facts: Facts, k: int, seed: int) -> list[AnswerRequest]:
    """`k` paraphrases (seeded by user, as the behaviour families draw theirs), one answer."""
    reference = reference_answer(facts.statements)
    rng = np.random.default_rng([seed, user, RECORDED_TASK_ID])
    picks = rng.choice(len(PARAPHRASES), size=min(k, len(PARAPHRASES)), replace=False)
    return [AnswerRequest(user, RECORDED, PARAPHRASES[int(i)], facts, reference) for i in picks]
