"""validation_users: the labelled training users, optionally a deterministic, evenly spread subset."""

from types import SimpleNamespace

import pandas as pd
import pytest

from components.evaluation.validation import validation_users
from components.ingestion import in_validation_holdout


def tables(n_train: int, n_probe: int) -> SimpleNamespace:
    ids = list(range(n_train + n_probe))
    users = pd.DataFrame({"user_id": ids, "split": ["train"] * n_train + ["probe"] * n_probe})
    labels = pd.DataFrame({"user_id": ids, "task": "t", "label": [i % 2 for i in ids]})
    return SimpleNamespace(users=users, labels=labels)


def held(n: int) -> list[int]:
    return [u for u in range(n) if in_validation_holdout(u)]


def test_the_labelled_training_users_of_the_holdout_and_never_a_probe_user():
    assert validation_users(tables(90, 10)) == held(90)
    assert not set(validation_users(tables(90, 10))) & set(range(90, 100))
    assert 0.25 < len(held(900)) / 900 < 0.42  # about a third of the training users


def test_too_few_holdout_users_are_refused():
    with pytest.raises(ValueError, match="validation holdout"):
        validation_users(tables(20, 10))


def test_a_limit_spreads_evenly_over_the_sorted_users_the_same_way_every_time():
    t, everyone = tables(200, 10), held(200)
    picked = validation_users(t, 25)
    assert len(picked) == len(set(picked)) == 25 and set(picked) <= set(everyone)
    assert picked[0] == everyone[0] and picked[-1] == everyone[-1]  # the whole range, not the first 25
    assert picked == validation_users(t, 25)
    assert validation_users(t, 500) == everyone  # a limit above the count keeps everyone


def test_a_limit_too_small_to_probe_is_refused():
    with pytest.raises(ValueError, match="fewer than 12"):
        validation_users(tables(100, 0), 10)
