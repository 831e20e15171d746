"""validation_users: the labelled training users, optionally a deterministic, evenly spread subset."""

from types import SimpleNamespace

import pandas as pd
import pytest

from components.evaluation.validation import validation_users


def tables(n_train: int, n_probe: int) -> SimpleNamespace:
    ids = list(range(n_train + n_probe))
    users = pd.DataFrame({"user_id": ids, "split": ["train"] * n_train + ["probe"] * n_probe})
    labels = pd.DataFrame({"user_id": ids, "task": "t", "label": [i % 2 for i in ids]})
    return SimpleNamespace(users=users, labels=labels)


def test_all_labelled_training_users_and_never_a_probe_user():
    assert validation_users(tables(30, 10)) == list(range(30))


def test_a_limit_spreads_evenly_over_the_sorted_users_the_same_way_every_time():
    t = tables(100, 10)
    picked = validation_users(t, 25)
    assert len(picked) == len(set(picked)) == 25
    assert picked[0] == 0 and picked[-1] == 99  # spread over the whole range, not the first 25
    assert max(b - a for a, b in zip(picked, picked[1:], strict=False)) <= 5
    assert picked == validation_users(t, 25)
    assert validation_users(t, 500) == list(range(100))  # a limit above the count keeps everyone


def test_a_limit_too_small_to_probe_is_refused():
    with pytest.raises(ValueError, match="fewer than 20"):
        validation_users(tables(100, 0), 10)
