"""Pure-logic tests of the model contract: ALS fold-in, popularity decay, artifacts."""

from __future__ import annotations

import io

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from models import ALSModel, ArtifactError, PopularityModel, UserItems, model_from_artifacts
from models.base import top_k


def _toy(n_users: int = 60, n_items: int = 40, seed: int = 0) -> UserItems:
    """Two taste clusters: even users like the first half of the items, odd the second."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(n_users):
        half = np.arange(n_items // 2) + (0 if u % 2 == 0 else n_items // 2)
        for j in rng.choice(half, size=8, replace=False):
            rows.append(u)
            cols.append(int(j))
    m = csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    return UserItems(
        m,
        np.array([f"u{u}" for u in range(n_users)], dtype=object),
        np.array([f"i{j}" for j in range(n_items)], dtype=object),
    )


@pytest.fixture(scope="module")
def als() -> ALSModel:
    return ALSModel.fit(_toy(), factors=8, regularization=0.1, alpha=2.0, iterations=10)


def test_fold_in_matches_implicit_recalculate_user(als: ALSModel) -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    ref = AlternatingLeastSquares(factors=8, regularization=0.1, alpha=2.0)
    ref.item_factors = als.item_factors.copy()
    ref.user_factors = als.user_factors.copy()
    row = csr_matrix((np.array([1.0, 2.0], np.float32), ([0, 0], [3, 7])), shape=(1, 40))
    expected = np.asarray(ref.recalculate_user(0, row)).ravel()
    got = als.fold_in(np.array([3, 7]), np.array([1.0, 2.0], np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)


def test_history_personalises_an_unknown_user(als: ALSModel) -> None:
    assert not als.known_user("stranger")
    assert als.recommend("stranger", 5) == []
    first_half = [f"i{j}" for j in range(4)]
    recs = als.recommend("stranger", 10, history=first_half)
    assert len(recs) == 10
    assert not set(first_half) & {i for i, _ in recs}
    in_cluster = sum(int(i[1:]) < 20 for i, _ in recs)
    assert in_cluster >= 8  # folded into the first cluster's taste


def test_recommend_is_sorted_and_respects_exclude(als: ALSModel) -> None:
    full = als.recommend("u0", 40)
    scores = [s for _, s in full]
    assert scores == sorted(scores, reverse=True)
    banned = {i for i, _ in full[:5]}
    recs = als.recommend("u0", 10, exclude=banned)
    assert not banned & {i for i, _ in recs}
    assert [i for i, _ in recs] == [i for i, _ in full[5:15]]


def test_history_weights_must_match_history(als: ALSModel) -> None:
    with pytest.raises(ValueError, match="history_weights"):
        als.recommend("u0", 5, history=["i1", "i2"], history_weights=[1.0])


def test_als_artifacts_round_trip_without_pickle(als: ALSModel) -> None:
    files = als.to_artifacts()
    assert {fmt for _, fmt in files.values()} == {"npz"}
    raw = {name: data for name, (data, _fmt) in files.items()}
    with np.load(io.BytesIO(raw["als.npz"]), allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    back = model_from_artifacts("als", raw, als.params())
    assert back.recommend("u3", 10, history=["i30"]) == als.recommend("u3", 10, history=["i30"])


def test_popularity_decay_prefers_recent_items() -> None:
    day = 86_400.0
    items = np.array(["old", "new"], dtype=object)
    # "old": 3 interactions 100 days ago; "new": 2 interactions today.
    codes = np.array([0, 0, 0, 1, 1])
    ts = np.array([0, 0, 0, 100 * day, 100 * day])
    decayed = PopularityModel.fit(items, codes, ts, half_life_days=7)
    flat = PopularityModel.fit(items, codes, ts, half_life_days=None)
    assert [i for i, _ in decayed.recommend("x", 2)] == ["new", "old"]
    assert [i for i, _ in flat.recommend("x", 2)] == ["old", "new"]
    assert decayed.recommend("x", 2, exclude={"new"}) == [
        ("old", pytest.approx(3 * 2 ** -(100 / 7)))
    ]


def test_popularity_round_trip_and_bad_artifacts() -> None:
    pop = PopularityModel.fit(
        np.array(["a", "b", "c"], dtype=object), np.array([0, 1, 1, 2, 2, 2]), np.zeros(6)
    )
    files = {n: d for n, (d, _f) in pop.to_artifacts().items()}
    back = model_from_artifacts("popularity", files, pop.params())
    assert back.recommend("u", 3, history=["c"]) == [("b", 2.0), ("a", 1.0)]
    with pytest.raises(ArtifactError, match="malformed"):
        model_from_artifacts("popularity", {"popularity.json": b"{not json"}, {})
    with pytest.raises(ArtifactError, match="missing"):
        model_from_artifacts("als", {}, {})
    with pytest.raises(ArtifactError, match="unknown model kind"):
        model_from_artifacts("magic", files, {})


def test_top_k_skips_banned_and_nan_and_breaks_ties_by_index() -> None:
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    scores = np.array([1.0, np.nan, 1.0, 3.0])
    assert top_k(scores, 10, ids, np.array([3])) == [("a", 1.0), ("c", 1.0)]
    assert top_k(scores, 0, ids) == []


def test_live_item_features_override_the_frozen_ones_by_name() -> None:
    from models.features import ITEM_FEATURES, override_block

    ids = np.array(["a", "b", "c"], dtype=object)
    block = override_block(
        ids, np.array([2, 0]), {"c": {"pop_7d": 5.0, "unknown": 1.0}, "z": {"pop_all": 1.0}}
    )
    assert block is not None and block.shape == (2, len(ITEM_FEATURES))
    assert block[0, ITEM_FEATURES.index("pop_7d")] == 5.0
    assert (
        np.isnan(block[1]).all()
        and np.isnan(np.delete(block[0], ITEM_FEATURES.index("pop_7d"))).all()
    )
    assert override_block(ids, np.array([0]), {"z": {"pop_all": 1.0}}) is None


def test_transitions_count_the_next_items_of_each_sequence_at_weight_one_over_distance() -> None:
    from scipy.sparse import csr_matrix

    from models.signals import rows_dot, transition_matrix

    # Users [0, 1, 2, 1] and [3, 0, 1]: pairs never cross users, an item never leads to itself.
    t = transition_matrix(np.array([0, 4, 7]), np.array([0, 1, 2, 1, 3, 0, 1]), 4).toarray()
    total0 = 1 + 1 + 1 / 3 + 1 / 2  # 0->1 twice at distance 1, once at 3; 0->2 at 2
    assert np.allclose(t[0], [0, (7 / 3) / total0, 0.5 / total0, 0])
    assert np.allclose(t[3], [1 / 1.5, 0.5 / 1.5, 0, 0]) and np.allclose(t[1], [0, 0, 1, 0])
    assert np.allclose(t.sum(axis=1), 1.0)
    got = rows_dot(csr_matrix(t), np.array([0, 3]), np.array([0.5, 2.0]))
    assert np.allclose(got, 0.5 * t[0] + 2.0 * t[3])


def test_rows_dot_with_scipys_row_copy_is_bitwise_the_numpy_gather(monkeypatch) -> None:
    """rows_dot copies the rows out and scatters them with scipy's C routines when it can
    (issue 14): the same products added in the same order as the numpy gather's bincount,
    so the same sums, bit for bit."""
    from scipy.sparse import random as sparse_random

    import models.row_sums as sums

    m = sparse_random(300, 300, density=0.1, format="csr", dtype=np.float32, random_state=3)
    rng = np.random.default_rng(3)
    cases = [(rng.choice(300, n, replace=False), rng.random(n)) for n in (0, 1, 7, 120)]
    fast = [sums.rows_dot(m, rows, w) for rows, w in cases]
    assert sums._csr_row_index is not None and sums._csc_matvec is not None  # pinned
    monkeypatch.setattr(sums, "_csr_row_index", None)
    for (rows, w), got in zip(cases, fast, strict=True):
        assert np.array_equal(got, sums.rows_dot(m, rows, w))
        assert np.allclose(got, w @ m[rows].toarray())
    monkeypatch.undo()
    # A batch of users at once (serving's batches): each row bitwise its own rows_dot.
    many = sums.rows_dot_many(m, [r for r, _ in cases], [w for _, w in cases])
    assert all(np.array_equal(a, b) for a, b in zip(many, fast, strict=True))
    # A sum continued from its head's (start_from, serving's kept training-row sums): bitwise
    # the sum of the joined rows.
    rows, w = cases[3]
    head = sums.rows_dot(m, rows[:80], w[:80])
    continued = sums.rows_dot_many(m, [rows[80:]], [w[80:]], start_from=[head])[0]
    assert np.array_equal(continued, fast[3])
    # Ranks of consecutive runs are each run's rank_desc: ties keep their order; runs of
    # unequal length padded, of equal length as rows; with a NaN, too.
    x = rng.random(12)
    x[[2, 3]] = x[4]
    for nan in (False, True):
        x[7] = np.nan if nan else x[7]
        for sizes in (np.array([5, 0, 7]), np.array([6, 6])):
            runs = np.split(x, np.cumsum(sizes)[:-1])
            want = np.concatenate([sums.rank_desc(r) for r in runs])
            assert np.array_equal(sums.rank_desc_many(x, sizes), want)


def test_the_batch_genre_max_is_the_products_max_for_any_genres_and_profiles() -> None:
    """models.two_stage_batch takes each candidate's best genre over its genre slots: the
    same values as the max of genres x profile, for items with no genre, some, or all, and
    for a user without items (a NaN profile)."""
    from models.features import ItemStats
    from models.two_stage_batch import _genre_max

    rng = np.random.default_rng(4)
    genres = (rng.random((60, 7)) < 0.3).astype(np.float32)
    genres[0] = 0.0  # no genre
    genres[1] = 1.0  # every genre
    stats = ItemStats(np.zeros((60, 1), np.float32), genres, np.array([]), 0.0)
    prof = rng.random((5, 7)).astype(np.float32)
    prof[2] = np.nan
    prof[3, 4] = 0.0
    cand = rng.integers(0, 60, (5, 40))
    cand[:, :2] = [0, 1]
    expected = (genres[cand] * prof[:, None, :]).max(axis=2)
    got = _genre_max(stats, prof, cand)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[2]).all() and not np.isnan(np.delete(got, 2, axis=0)).any()
