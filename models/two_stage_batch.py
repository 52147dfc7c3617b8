"""Several users' two-stage calls scored together: serving gathers the requests that arrive
while a model call is in flight and ranks them in one pass here.

Per user stays what differs per user (the history turned into columns, the fold-in's
least-squares system, the profile); the rest runs once for the whole batch: one batched
solve of the fold-ins, the candidates of every user selected in one 2-D argpartition, the
feature rows gathered into one matrix (the per-user products stacked by shape into one
np.matmul each, the kNN / transition rows of all users copied out and ranked together) and
one call of the compiled ranker over all of them (its per-call overhead, ~0.1 ms, was a
fifth of a single call). A batch of one is the single call (cheaper alone).

The ranking and the scores are the single call's: every per-row operation is the same one
on the same values, and the products whose rounding depends on their shape (BLAS's gemv
against gemm) keep each user's shape (a stack of same-shape matrices gets the same BLAS call
per matrix). tests/test_serving_fast_path.py compares it with the plain computation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from models.base import ModelCall, Row, csr_row, excluded_columns, history_vector
from models.features import (
    FEATURES,
    ITEM_FEATURES,
    LiveItemFeatures,
    UserProfile,
    recent_similarity,
)

if TYPE_CHECKING:
    from models.als import ALSModel
    from models.features import ItemStats
    from models.two_stage import CandidateGenerator, TwoStageModel

# The columns :func:`_features` computes, in order (``feature_matrix``'s).
_KNOWN = (
    "als_score",
    "als_rank",
    "als_score_gap",
    *ITEM_FEATURES,
    "genre_affinity",
    "genre_max",
    "user_activity",
    "user_rating_mean",
    "pop_vs_user",
    "recent_sim_mean",
    "recent_sim_max",
)

Scored = list[tuple[str, float]]


def recommend_unseen_batch(model: TwoStageModel, calls: Sequence[ModelCall]) -> list[Scored]:
    """``[model.recommend_unseen(c.user_id, c.k, ...) for c in calls]``, computed together.
    Calls the batch cannot take (a plain mapping of item features, a user nobody knows, a k
    above the candidates, a live table newer than the batch's) are made one by one."""
    if len(calls) < 2 or not batchable(model):  # alone, the single call costs less
        return [_single(model, c) for c in calls]
    gen, als = model.generator, model.als
    out: list[Scored | None] = [None] * len(calls)
    rows: list[_Row] = []
    table: np.ndarray | None = None
    for i, c in enumerate(calls):
        feats = c.item_features
        if feats is not None and not isinstance(feats, LiveItemFeatures):
            out[i] = _single(model, c)
            continue
        u = als.user_index.get(c.user_id)
        hcols, hvals = history_vector(c.history, None, als.item_index)
        merged = als.merged_row(u, hcols, hvals)
        if (merged is None and u is None) or c.k > model.n_candidates:
            out[i] = _single(model, c)
            continue
        t = gen.live_table(feats.dense(als.item_ids)) if feats is not None else gen.stats.table
        if table is None:
            table = t
        elif t is not table:
            out[i] = _single(model, c)
            continue
        ban = np.concatenate(
            [excluded_columns(als.item_index, c.exclude), hcols, als.seen_columns(u)]
        )
        train = csr_row(als.user_items, u) if u is not None else None
        rows.append(_Row(i, c, u, train, hcols, merged, ban))
    if rows and table is not None:
        for row, got in zip(rows, _rank(model, rows, table), strict=True):
            out[row.at] = got
    return [o if o is not None else [] for o in out]


@dataclass(slots=True)
class _Row:
    """One call of the batch and what it has worked out per user."""

    at: int  # position in the batch's calls
    call: ModelCall
    u: int | None  # training row
    train: Row | None  # its columns and weights
    hcols: np.ndarray  # the history's known columns
    merged: tuple[np.ndarray, np.ndarray] | None  # training row + history (None: no fold-in)
    ban: np.ndarray  # columns never offered


def _single(model: TwoStageModel, c: ModelCall) -> Scored:
    return model.recommend_unseen(
        c.user_id, c.k, history=c.history, exclude=c.exclude, item_features=c.item_features
    )


def batchable(model: TwoStageModel) -> bool:
    """Whether the version's candidates are ALS's alone (sequential candidates are called
    one by one, still off the event loop and in one hand-off) and this module knows the
    base feature list."""
    return FEATURES == _KNOWN and not getattr(model.generator, "_seq", False)


def _user_vectors(als: ALSModel, rows: list[_Row]) -> list[np.ndarray]:
    """Each user's factor: learned, or folded in, all fold-ins in one batched solve (one
    LAPACK gesv per system, as np.linalg.solve makes for one: the same factors)."""
    vecs: list[np.ndarray | None] = []
    systems, at = [], []
    for r, row in enumerate(rows):
        if row.merged is None:
            assert row.u is not None  # rows without either are made one by one
            vecs.append(als.user_factors[row.u])
            continue
        vecs.append(None)
        cols, values = row.merged
        y = als._factors64[cols]  # ALSModel.fold_in's system
        c = als.alpha * values.astype(np.float64)
        systems.append((als._yty_reg + (y * (c - 1.0)[:, None]).T @ y, y.T @ c))
        at.append(r)
    if systems:
        a = np.stack([s[0] for s in systems])
        b = np.stack([s[1] for s in systems])[:, :, None]
        solved = np.linalg.solve(a, b)[:, :, 0].astype(np.float32)
        for r, vec in zip(at, solved, strict=True):
            vecs[r] = vec
    return [v for v in vecs if v is not None]


def _rank(model: TwoStageModel, rows: list[_Row], table: np.ndarray) -> list[Scored]:
    gen, als = model.generator, model.als
    vecs = _user_vectors(als, rows)
    n_items = len(als.item_ids)
    scores = np.empty((len(rows), n_items), np.float64)
    for r, vec in enumerate(vecs):
        # A gemv per user, as the single call makes: a gemm rounds differently.
        scores[r] = als.item_factors @ vec
    flat_bans = np.concatenate(
        [row.ban.astype(np.int64) + r * n_items for r, row in enumerate(rows)]
    )
    scores.reshape(-1)[flat_bans] = -np.inf
    n = model.n_candidates  # every call here asks for at most this many
    if n < n_items:
        cand = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    else:
        cand = np.broadcast_to(np.arange(n_items), (len(rows), n_items)).copy()
    cand_scores = np.take_along_axis(scores, cand, axis=1)
    order = np.lexsort((cand, -cand_scores), axis=1)  # best first, ties by column
    cand = np.take_along_axis(cand, order, axis=1)
    cand_scores = np.take_along_axis(cand_scores, order, axis=1)
    finite = np.isfinite(cand_scores).sum(axis=1)  # a row's banned items come last
    x = _features(gen, rows, cand, cand_scores, finite, table)
    ranked = model.ranker.predict_fast(x) if x.shape[0] else np.zeros(0)
    ids, k = als.item_ids, max(row.call.k for row in rows)
    if (finite == finite[0]).all() and finite[0] > 0:  # the usual batch: one sort for all
        s = ranked.reshape(len(rows), -1)
        # Best first, ties by position: the single call's lexsort((arange, -s)) order.
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(s, top, axis=1).tolist()
        got = ids[np.take_along_axis(cand, top, axis=1)].tolist()
        return [
            list(zip(got[r][: row.call.k], best[r][: row.call.k], strict=True))
            for r, row in enumerate(rows)
        ]
    out: list[Scored] = []
    start = 0
    for r, row in enumerate(rows):
        m = int(finite[r])
        s = ranked[start : start + m]
        start += m
        top = np.lexsort((np.arange(m), -s))[: row.call.k]
        out.append(list(zip(ids[cand[r, top]].tolist(), s[top].tolist(), strict=True)))
    return out


def _features(
    gen: CandidateGenerator,
    rows: list[_Row],
    cand: np.ndarray,
    cand_scores: np.ndarray,
    finite: np.ndarray,
    table: np.ndarray,
) -> np.ndarray:
    """What ``CandidateGenerator.generate`` computes for every row's first ``finite[r]``
    candidates, stacked: ``feature_matrix`` and the version's extra features."""
    stats, unit = gen.stats, gen.unit_factors
    keep = np.arange(cand.shape[1])[None, :] < finite[:, None]
    flat = cand[keep]  # row-major: each user's candidates in order
    owner = np.repeat(np.arange(len(rows)), finite)
    names = tuple(getattr(gen, "feature_names", FEATURES))
    # The version's extra features after the base ones (training's order): written in place.
    tail = names[len(FEATURES) :] if names[: len(FEATURES)] == FEATURES else None
    width = len(names) if tail is not None else len(FEATURES)
    out = np.empty((flat.size, width), dtype=np.float32)
    out[:, 0] = cand_scores[keep]
    out[:, 1] = np.broadcast_to(np.arange(cand.shape[1]), cand.shape)[keep]
    with np.errstate(invalid="ignore"):  # -inf - -inf in the rows' banned tails
        out[:, 2] = (cand_scores[:, :1] - cand_scores)[keep]
    out[:, 3 : 3 + len(ITEM_FEATURES)] = table[flat]
    base = 3 + len(ITEM_FEATURES)
    profiles = [gen.profile(row.call.user_id, row.hcols, _items(gen.als, row)) for row in rows]
    per_user = np.empty((len(rows), 3), np.float32)  # activity, rating mean, log-popularity
    log_pop = stats.log_pop
    for r, p in enumerate(profiles):
        user_pop = float(log_pop[p.items].mean()) if p.items.size else np.nan
        per_user[r] = (np.log1p(p.items.size), p.rating_mean, np.float32(user_pop))
    genres = _genre_profiles(stats.genres, profiles)
    starts = np.cumsum(finite) - finite
    # The per-user products, stacked by shape: np.matmul makes the same BLAS call for each
    # matrix of a stack as for one alone, so the values are the single call's.
    for m, group in _by(finite.tolist()).items():
        if m == 0:
            continue
        users = np.asarray(group)
        at = starts[users][:, None] + np.arange(m)  # the users' rows of ``out``
        # All of them (the usual batch): slices instead of gathers and scatters.
        rows_of: slice | np.ndarray = slice(None) if len(group) == len(rows) else at.ravel()
        cand_g = flat[rows_of].reshape(len(group), m)
        cg = stats.genres[cand_g]  # users x m x genres
        if genres is not None:
            prof = genres[users]
            affinity = np.matmul(cg, prof[:, :, None])[:, :, 0] / stats.genre_counts[cand_g]
            out[rows_of, base] = affinity.ravel()
            out[rows_of, base + 1] = _genre_max(stats, prof, cand_g).ravel()
        else:
            out[rows_of, base : base + 2] = np.nan
        sizes = [profiles[r].recent.size for r in group]
        for n, sub in _by(sizes).items():
            sel = rows_of if len(sub) == len(group) else at[sub].ravel()
            if n == 0:
                out[sel, base + 5 : base + 7] = np.nan
                continue
            recent = np.stack([profiles[group[i]].recent for i in sub])
            sims = np.matmul(unit[recent], unit[cand_g[sub]].transpose(0, 2, 1))
            mean, best = recent_similarity(sims)
            out[sel, base + 5] = mean.ravel()
            out[sel, base + 6] = best.ravel()
    out[:, base + 2] = per_user[owner, 0]
    out[:, base + 3] = per_user[owner, 1]
    # float32 minus a float32 per user, as the single call's array minus a Python float.
    out[:, base + 4] = log_pop[flat] - per_user[owner, 2]
    if names == FEATURES:
        return out
    from models.signals import assemble  # a version's own feature list (issue 19)

    # The extra features as ``generate`` computes them, all users' at once.
    extra = gen.signals.columns_many(
        names,
        flat,
        finite,
        recents=[p.recent for p in profiles],
        rows=[_item_row(row) for row in rows],
        starts=[_training_start(row) for row in rows],
    )
    if tail is None:
        return assemble(names, out, extra)
    for i, name in enumerate(tail, start=len(FEATURES)):
        out[:, i] = extra[name]
    return out


def _items(als: ALSModel, row: _Row) -> np.ndarray | None:
    """The profile's items (the sorted union of the training row and the history) from the
    merge: with canonical rows its columns are distinct, the row's and the history's new
    ones, so sorted they are the union (None: the profile works it out)."""
    if not als.canonical_rows:
        return None
    if row.merged is not None:
        return np.sort(row.merged[0])
    return None if row.train is None else row.train.indices.astype(np.int64)


def _item_row(row: _Row) -> tuple[np.ndarray, np.ndarray] | None:
    """The user's item row as the extra features read it: the merge, else the training row."""
    if row.merged is None and row.train is not None:
        return row.train.indices, row.train.data
    return row.merged


def _training_start(row: _Row) -> tuple[int, np.ndarray, np.ndarray] | None:
    """(training row index, its columns, its float32 weights) when the user's item row
    (:func:`_item_row`) begins with the training row unchanged: no history item was in it
    (merge_history then only appends), and float32 weights (the merge's) make the two
    rows' weights the same values."""
    train = row.train
    if row.u is None or train is None or train.data.dtype != np.float32:
        return None
    if row.merged is not None and len(row.merged[0]) != len(train.indices) + len(row.hcols):
        return None  # some history item raised a training weight
    return row.u, train.indices, train.data


def _by(keys: list[int]) -> dict[int, list[int]]:
    """Positions grouped by key, in order."""
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def _genre_max(stats: ItemStats, prof: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``(stats.genres[cand] * prof[:, None, :]).max(axis=2)`` (users x candidates), the
    single call's genre_max, over each candidate's few genre slots (ItemStats.genre_slots)
    instead of every genre: the products are 0 or the profile's value, so the max is the
    best of the item's genres and 0 (for a genre it lacks), and NaN for a user without
    items (a NaN profile), as the product's max is."""
    n_genres = prof.shape[1]
    padded = np.zeros((len(prof), n_genres + 1), np.float32)  # the last column: the 0 slot
    padded[:, :n_genres] = prof
    at = stats.genre_slots[cand] + (np.arange(len(prof)) * (n_genres + 1))[:, None, None]
    values = padded.ravel()[at]  # users x candidates x slots
    best: np.ndarray = values[:, :, 0].copy()
    for j in range(1, values.shape[2]):  # elementwise over the few slots
        np.maximum(best, values[:, :, j], out=best)
    best[np.isnan(prof).any(axis=1)] = np.nan
    return best


def _genre_profiles(genres: np.ndarray, profiles: list[UserProfile]) -> np.ndarray | None:
    """Each user's mean genre vector (``genres[p.items].mean(axis=0)``; NaN without items),
    None without genres. The 0/1 genres sum exactly in any order, and the float64 quotient
    rounded to float32 is the mean's: the same values from one gather for all users."""
    if not genres.shape[1]:
        return None
    sizes = np.fromiter((p.items.size for p in profiles), np.int64, len(profiles))
    out = np.full((len(profiles), genres.shape[1]), np.nan, np.float32)
    has = sizes > 0
    if has.any():
        items = np.concatenate([p.items for p in profiles])
        sums = np.add.reduceat(genres[items], (np.cumsum(sizes) - sizes)[has], axis=0)
        out[has] = sums / sizes[has, None]
    return out
