"""The contract serving relies on besides ``recommend``: ``seen_items`` / ``knows_item`` in
every model, and :class:`LiveItemFeatures` giving the same answers as a plain mapping (it
only memoises). The two-stage model is trained on MovieLens as in the serving tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from models import ALSModel, ItemKNNModel, PopularityModel, UserItems
from models.features import ITEM_FEATURES, LiveItemFeatures, override_block
from models.random_model import RandomModel


def _toy() -> UserItems:
    # u0 saw i0, i2; u1 saw i1, i3 (i3 twice: its weight is the larger); i4 nobody saw.
    m = csr_matrix((np.array([1, 1, 1, 2], np.float32), ([0, 0, 1, 1], [0, 2, 1, 3])), shape=(2, 5))
    return UserItems(
        m,
        np.array(["u0", "u1"], dtype=object),
        np.array([f"i{j}" for j in range(5)], dtype=object),
    )


@pytest.fixture(scope="module")
def user_models() -> list:
    data = _toy()
    return [
        ALSModel.fit(data, factors=2, iterations=2, num_threads=1),
        ItemKNNModel.fit(data, neighbours=3, num_threads=1),
    ]


def test_models_with_users_report_their_training_items(user_models: list) -> None:
    for model in user_models:
        assert sorted(model.seen_items("u0")) == ["i0", "i2"], model.kind
        assert sorted(model.seen_items("u1")) == ["i1", "i3"], model.kind
        assert list(model.seen_items("stranger")) == [], model.kind
        assert model.knows_item("i4") and not model.knows_item("i9"), model.kind


def test_models_without_users_see_nothing_but_know_their_items() -> None:
    pop = PopularityModel(np.array(["a", "b"], dtype=object), np.array([2.0, 1.0]))
    rnd = RandomModel(["a", "b"], seed=1)
    for model in (pop, rnd):
        assert list(model.seen_items("anyone")) == []
        assert model.knows_item("a") and not model.knows_item("z")


def test_live_item_features_are_a_read_only_mapping_with_a_memoised_dense_form() -> None:
    raw = {"c": {"pop_7d": 5.0, "unknown": 1.0}, "a": {"rating_mean": 4.5}, "z": {"pop_all": 1}}
    live = LiveItemFeatures(raw)
    assert dict(live) == raw and len(live) == 3 and live["a"] == {"rating_mean": 4.5}
    assert live == raw  # compared by value, as mappings are
    ids = np.array(["a", "b", "c"], dtype=object)
    dense = live.dense(ids)
    assert dense is not None and dense.shape == (3, len(ITEM_FEATURES))
    np.testing.assert_array_equal(dense, override_block(ids, np.arange(3), raw))
    assert live.dense(ids) is dense  # built once per id array
    other = np.array(["c"], dtype=object)
    assert live.dense(other)[0, ITEM_FEATURES.index("pop_7d")] == 5.0
    assert LiveItemFeatures({"z": {"pop_all": 1.0}}).dense(ids) is None


@pytest.mark.integration
def test_two_stage_answers_the_same_with_live_features_and_a_plain_mapping(
    settings, tmp_path: Path
) -> None:
    from tests.support.serving import trained

    model = trained(str(settings.cache_path)).model
    ids = model.als.item_ids
    raw = {
        str(ids[j]): {"pop_all": float(1000 - j), "pop_7d": float(j % 7), "rating_mean": 3.0}
        for j in range(0, len(ids), 3)
    }
    live = LiveItemFeatures(raw)
    for user, history in (("1", []), ("2", [str(ids[5]), str(ids[9])]), ("new", [str(ids[0])])):
        seen = model.seen_items(user)
        expected = model.recommend(user, 10, history=history, exclude=seen, item_features=raw)
        got = model.recommend(user, 10, history=history, exclude=seen, item_features=live)
        assert got == expected and len(got) == 10
        assert not set(seen) & {item for item, _ in got}
    plain = model.recommend("1", 10, exclude=model.seen_items("1"))
    assert plain != model.recommend("1", 10, exclude=model.seen_items("1"), item_features=live)
