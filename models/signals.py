"""Ranker features beyond :data:`models.features.FEATURES`, each group backed by one artifact
of the two-stage version (issue 19): what the user's item *sequence* says about a candidate.

- transitions (``transitions.npz``): how often the candidate followed the user's newest
  items in the training sequences — P(next = c | item), counted over the next
  :data:`TRANSITION_WINDOW` items at weight 1/distance, normalised per item. No JAX.
- item-kNN (``ranker_knn.npz``): the user's item row times the item-item similarity of the
  kNN baseline at the candidate, and its rank among the candidates.
- SASRec (``sasrec.npz``, :class:`models.sasrec.SASRecModel`): the sequential model's score
  of the candidate given the user's training sequence followed by the fresh history, its
  rank among the candidates and the distance to the best candidate's score; optionally its
  top-N as a second candidate source.

A version lists the features its ranker was trained on (``params.features``); serving builds
exactly those, so adding a feature here never makes an older version unloadable.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from models.features import FEATURES
from models.npz import csr_arrays, csr_from, from_npz, to_npz
from models.row_sums import continues, rank_desc, rank_desc_many, rows_dot, rows_dot_many

TRANSITION_FEATURES = ("next_last", "next_recent")
KNN_FEATURES = ("knn_score", "knn_rank")
SASREC_FEATURES = ("sasrec_score", "sasrec_rank", "sasrec_gap")
EXTRA_FEATURES = (*TRANSITION_FEATURES, *KNN_FEATURES, *SASREC_FEATURES)
ALL_FEATURES = (*FEATURES, *EXTRA_FEATURES)
TRANSITIONS_ARTIFACT = "transitions.npz"
KNN_ARTIFACT = "ranker_knn.npz"
TRANSITION_WINDOW = 3
# Memory for the users' training-row kNN sums a version keeps (Signals._knn_start): 64 MB
# holds ~4,900 users of a 1,682-item catalog (13 KB each), ~160 of a 50,000-item one.
KNN_START_CACHE_BYTES = 64 << 20


def transition_matrix(indptr: np.ndarray, items: np.ndarray, n_items: int) -> csr_matrix:
    """Row-normalised ``n_items x n_items``: row ``a`` holds where users went after ``a``
    (the next :data:`TRANSITION_WINDOW` items of each user's sequence, oldest first, weighted
    1/distance). ``items[indptr[u]:indptr[u + 1]]`` is user ``u``'s sequence."""
    owner = np.repeat(np.arange(len(indptr) - 1, dtype=np.int32), np.diff(indptr))
    items = np.asarray(items, dtype=np.int32)
    m = csr_matrix((n_items, n_items), dtype=np.float64)
    # One distance at a time, summed as sparse matrices: the pairs of all three at once
    # would be 3x the interactions in memory (30M events: ~1 GB of COO triples).
    for d in range(1, TRANSITION_WINDOW + 1):
        keep = (owner[d:] == owner[:-d]) & (items[:-d] != items[d:])  # not to itself
        r, c = items[:-d][keep], items[d:][keep]
        vals = np.full(len(r), 1.0 / d)
        m = m + csr_matrix((vals, (r, c)), shape=(n_items, n_items))
        del keep, r, c, vals
    m = m.tocsr()
    m.sum_duplicates()
    out = np.asarray(m.sum(axis=1)).ravel()
    m.data /= np.repeat(np.maximum(out, 1e-12), np.diff(m.indptr))
    return csr_matrix(m, dtype=np.float32)


@dataclass
class Signals:
    """The artifacts behind :data:`EXTRA_FEATURES` (None: that group is not available).
    ``sasrec`` is a :class:`models.sasrec.SASRecModel` over the same item columns as ALS."""

    transitions: csr_matrix | None = None
    knn: csr_matrix | None = None
    sasrec: Any = None
    seq_candidates: int = 0  # SASRec's top-N added to the ALS candidates
    _knn_starts: OrderedDict[int, np.ndarray] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )
    _knn_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def _knn_start(self, u: int, cols: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``rows_dot(knn, cols, weights)`` of training row ``u``, kept for the next request
        of the user (least recently used dropped past :data:`KNN_START_CACHE_BYTES`): the
        training rows are ~80% of a MovieLens user's item row and do not change while this
        version serves, so a request sums only its fresh history's rows (issue 14)."""
        assert self.knn is not None
        memo, lock = self._knn_starts, self._knn_lock
        with lock:
            hit = memo.get(u)
            if hit is not None:
                memo.move_to_end(u)
                return hit
        vec = rows_dot(self.knn, np.asarray(cols, np.int64), weights)
        vec.setflags(write=False)  # shared by the requests of the user
        with lock:
            memo[u] = vec
            while len(memo) * vec.nbytes > KNN_START_CACHE_BYTES and len(memo) > 1:
                memo.popitem(last=False)
        return vec

    def missing_for(self, names: Sequence[str]) -> list[str]:
        """The artifacts ``names`` need that these signals lack."""
        need = {
            TRANSITIONS_ARTIFACT: self.transitions is None
            and any(n in TRANSITION_FEATURES for n in names),
            KNN_ARTIFACT: self.knn is None and any(n in KNN_FEATURES for n in names),
            "sasrec.npz": self.sasrec is None
            and (self.seq_candidates > 0 or any(n in SASREC_FEATURES for n in names)),
        }
        return [a for a, lacking in need.items() if lacking]

    def sasrec_scores(self, user_id: str, history: Sequence[str]) -> np.ndarray | None:
        """SASRec's score of every item column for the user's sequence (None: no sequence)."""
        if self.sasrec is None:
            return None
        vec = self.sasrec.user_vector(user_id, history)
        return None if vec is None else np.asarray(self.sasrec.scores(vec), np.float64)

    def columns(
        self,
        names: Sequence[str],
        cand: np.ndarray,
        *,
        recent: np.ndarray,
        row: tuple[np.ndarray, np.ndarray] | None,
        seq_scores: np.ndarray | None,
    ) -> dict[str, np.ndarray]:
        """The extra features among ``names`` of the candidate columns ``cand``. ``recent``:
        the user's newest item columns, newest first (fresh history first); ``row``: the
        user's item row (columns, weights) with the fresh history merged; ``seq_scores``:
        :meth:`sasrec_scores`."""
        out: dict[str, np.ndarray] = {}
        nan = np.full(len(cand), np.nan)
        wanted = set(names)
        if wanted & set(TRANSITION_FEATURES):
            assert self.transitions is not None  # checked when the model was loaded
            if recent.size:
                t = self.transitions
                out["next_last"] = rows_dot(t, recent[:1], np.ones(1))[cand]
                weights = np.full(len(recent), 1.0 / len(recent))
                out["next_recent"] = rows_dot(t, recent, weights)[cand]
            else:
                out["next_last"] = out["next_recent"] = nan
        if wanted & set(KNN_FEATURES):
            assert self.knn is not None
            if row is not None and row[0].size:
                score = rows_dot(self.knn, np.asarray(row[0], np.int64), row[1])[cand]
                out["knn_score"], out["knn_rank"] = score, rank_desc(score)
            else:
                out["knn_score"] = out["knn_rank"] = nan
        if wanted & set(SASREC_FEATURES):
            if seq_scores is not None and cand.size:
                s = seq_scores[cand]
                out["sasrec_score"], out["sasrec_rank"] = s, rank_desc(s)
                out["sasrec_gap"] = s.max() - s
            else:
                out["sasrec_score"] = out["sasrec_rank"] = out["sasrec_gap"] = nan
        return out

    def columns_many(
        self,
        names: Sequence[str],
        cand: np.ndarray,
        sizes: np.ndarray,
        *,
        recents: Sequence[np.ndarray],
        rows: Sequence[tuple[np.ndarray, np.ndarray] | None],
        starts: Sequence[tuple[int, np.ndarray, np.ndarray] | None] | None = None,
    ) -> dict[str, np.ndarray]:
        """:meth:`columns` of several users (no sequential scores): ``cand`` is the users'
        candidates concatenated, ``sizes[r]`` how many are user ``r``'s, and each feature
        comes back concatenated the same way. The sparse rows of all users are summed in one
        :func:`rows_dot_many` per matrix and the ranks sorted in one pass (the same values,
        without ~25 small numpy calls a user). ``starts[r]``: (training row index, its
        columns, its float32 weights) when user ``r``'s item row begins with that training
        row unchanged: its kNN sum is kept per user (:meth:`_knn_start`) and continued."""
        wanted, out = set(names), dict[str, np.ndarray]()
        owner = np.repeat(np.arange(len(sizes)), sizes)

        def spread(dense: np.ndarray, have: np.ndarray) -> np.ndarray:
            """Row ``i`` of ``dense`` (the ``i``-th user with data) at its candidates."""
            if have.all():
                return np.asarray(dense[owner, cand])
            got = np.full(len(cand), np.nan)
            pick = have[owner]
            got[pick] = dense[(np.cumsum(have) - 1)[owner[pick]], cand[pick]]
            return got

        if wanted & set(TRANSITION_FEATURES):
            assert self.transitions is not None  # checked when the model was loaded
            have = np.fromiter((r.size > 0 for r in recents), bool, len(recents))
            rec = [r for r in recents if r.size]
            last = rows_dot_many(self.transitions, [r[:1] for r in rec], [np.ones(1)] * len(rec))
            mean = rows_dot_many(
                self.transitions, rec, [np.full(len(r), 1.0 / len(r)) for r in rec]
            )
            out["next_last"], out["next_recent"] = spread(last, have), spread(mean, have)
        if wanted & set(KNN_FEATURES):
            assert self.knn is not None
            have = np.fromiter((r is not None and r[0].size > 0 for r in rows), bool, len(rows))
            picked, got = [], []
            for i, r in enumerate(rows):
                if r is not None and r[0].size:
                    picked.append(i)
                    got.append(r)
            cols, weights = [np.asarray(r[0], np.int64) for r in got], [r[1] for r in got]
            heads: list[np.ndarray | None] | None = None
            if starts is not None and continues(self.knn):
                # A training row's part of the sum, kept per user: the fresh rows continue it.
                heads = []
                for n, i in enumerate(picked):
                    start = starts[i]
                    heads.append(None if start is None else self._knn_start(*start))
                    if start is not None:
                        skip = len(start[1])
                        cols[n], weights[n] = cols[n][skip:], weights[n][skip:]
            dense = rows_dot_many(self.knn, cols, weights, start_from=heads)
            out["knn_score"] = spread(dense, have)
            ranks = np.full(len(cand), np.nan)
            pick = have[owner]
            ranks[pick] = rank_desc_many(out["knn_score"][pick], sizes[have])
            out["knn_rank"] = ranks
        if wanted & set(SASREC_FEATURES):
            nan = np.full(len(cand), np.nan)
            out["sasrec_score"] = out["sasrec_rank"] = out["sasrec_gap"] = nan
        return out

    # -- artifacts -------------------------------------------------------------------------
    def to_artifacts(self) -> dict[str, tuple[bytes, str]]:
        files: dict[str, tuple[bytes, str]] = {}
        if self.transitions is not None:
            files[TRANSITIONS_ARTIFACT] = (to_npz(csr_arrays("t", self.transitions)), "npz")
        if self.knn is not None:
            files[KNN_ARTIFACT] = (to_npz(csr_arrays("s", self.knn)), "npz")
        if self.sasrec is not None:
            files.update(self.sasrec.to_artifacts())
        return files

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"seq_candidates": self.seq_candidates}
        if self.sasrec is not None:
            p["sasrec"] = self.sasrec.params()
        return p

    @classmethod
    def from_artifacts(
        cls, files: Mapping[str, bytes], params: Mapping[str, Any], *, kind: str
    ) -> Signals:
        """What the version holds (absent artifacts stay None: the caller checks the
        feature list against :meth:`missing_for`)."""
        sig = cls(seq_candidates=int(params.get("seq_candidates", 0)))
        if TRANSITIONS_ARTIFACT in files:
            a = from_npz(files[TRANSITIONS_ARTIFACT], kind=kind, artifact=TRANSITIONS_ARTIFACT)
            sig.transitions = csr_from("t", a)
        if KNN_ARTIFACT in files:
            sig.knn = csr_from("s", from_npz(files[KNN_ARTIFACT], kind=kind, artifact=KNN_ARTIFACT))
        if "sasrec.npz" in files:
            from models.sasrec import SASRecModel

            sig.sasrec = SASRecModel.from_artifacts(files, dict(params.get("sasrec", {})))
        return sig


def assemble(names: Sequence[str], base: np.ndarray, extra: Mapping[str, np.ndarray]) -> np.ndarray:
    """The ``names`` columns, in order, from the :data:`FEATURES` block and the extras."""
    if tuple(names) == FEATURES:
        return base
    out = np.empty((base.shape[0], len(names)), np.float32)
    for i, name in enumerate(names):
        out[:, i] = extra[name] if name in extra else base[:, FEATURES.index(name)]
    return out
