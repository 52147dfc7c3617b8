"""Code tests: the per-user temporal split."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.split import temporal_test_mask


def test_last_fifth_of_each_user_is_test():
    users = np.array(["a"] * 10 + ["b"] * 5)
    ts = np.concatenate([np.arange(10)[::-1], np.arange(5)])  # a's rows are newest-first
    mask = temporal_test_mask(users, ts)
    assert mask[:10].tolist() == [True, True] + [False] * 8  # the two newest of a
    assert mask[10:].tolist() == [False] * 4 + [True]


def test_ties_keep_input_order_and_small_users_stay_in_train():
    users = np.array(["a"] * 5 + ["c"] * 4)
    ts = np.zeros(9, dtype=np.int64)
    mask = temporal_test_mask(users, ts)
    assert mask.tolist() == [False] * 4 + [True] + [False] * 4


def test_every_test_row_is_newer_than_every_train_row_of_its_user():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, 5000).astype(str)
    ts = rng.integers(0, 1000, 5000)
    mask = temporal_test_mask(users, ts)
    for u in np.unique(users):
        sel = users == u
        if mask[sel].any():
            assert ts[sel & mask].min() >= ts[sel & ~mask].max()
        assert mask[sel].sum() == int(np.floor(sel.sum() * 0.2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="differ in length"):
        temporal_test_mask(np.array(["a"]), np.array([1, 2]))
    with pytest.raises(ValueError, match="test_fraction"):
        temporal_test_mask(np.array(["a"]), np.array([1]), 1.5)
    assert temporal_test_mask(np.array([]), np.array([])).size == 0
