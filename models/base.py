"""The model contract shared by training (writes models) and serving (loads and calls them).

A :class:`Recommender` turns a user (known from training, or only known through the fresh
items serving read from Redis) into a ranked list of item ids. Models serialise to artifact
files in formats that execute no code when read (npz without pickle, LightGBM text, JSON).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Self

import numpy as np
from scipy.sparse import csr_matrix

# Formats an artifact may have (recorded in the model card).
FORMATS = ("npz", "lightgbm-text", "json")


class Recommender(ABC):
    """Base of every model. ``kind`` names the implementation in the registry."""

    kind: ClassVar[str]

    @abstractmethod
    def recommend(
        self,
        user_id: str,
        k: int,
        *,
        history: Sequence[str] = (),
        history_weights: Sequence[float] | None = None,
        exclude: Collection[str] = (),
        item_features: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[tuple[str, float]]:
        """Up to ``k`` ``(item_id, score)`` pairs, best first.

        ``history`` are the user's fresh items (newest first, e.g. from Redis) with optional
        confidences ``history_weights`` (default 1.0 each); they are folded into the user's
        representation, so a user unseen in training still gets personal results. Items in
        ``exclude`` are never returned; neither are items of ``history`` (the caller decides
        about training-time interactions by passing them in ``exclude``). Unknown history
        items are ignored. ``item_features`` optionally overrides per-item ranker features by
        name with live values (models without such features ignore it). An unknown user with
        no usable history gets ``[]`` from personal models (callers fall back to popularity).
        """

    def recommend_unseen(
        self,
        user_id: str,
        k: int,
        *,
        history: Sequence[str] = (),
        exclude: Collection[str] = (),
        item_features: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[tuple[str, float]]:
        """:meth:`recommend` without anything the user has seen: ``history``, ``exclude``
        and the user's training-time items (:meth:`seen_items`), which is what serving asks.
        Models holding the training rows override it to ban them by column instead of
        turning them into item ids and back on every call."""
        return self.recommend(
            user_id,
            k,
            history=history,
            exclude=frozenset(exclude).union(self.seen_items(user_id)),
            item_features=item_features,
        )

    def recommend_unseen_batch(self, calls: Sequence[ModelCall]) -> list[list[tuple[str, float]]]:
        """:meth:`recommend_unseen` of each call, in order. Serving hands over the calls of
        requests that arrived together; a kind that scores several users in one pass
        overrides it (the answers must be the single calls')."""
        return [
            self.recommend_unseen(
                c.user_id, c.k, history=c.history, exclude=c.exclude, item_features=c.item_features
            )
            for c in calls
        ]

    @abstractmethod
    def known_user(self, user_id: str) -> bool:
        """True if the user was in the training data (has a learned representation)."""

    @abstractmethod
    def seen_items(self, user_id: str) -> Collection[str]:
        """Items the user interacted with in the training data (empty for users the model
        does not know, and for models that keep no per-user data). Serving excludes them."""

    @abstractmethod
    def knows_item(self, item_id: str) -> bool:
        """True if the model can use ``item_id`` in a user's ``history`` (it has a learned
        representation of it): fresh history of known items personalises unseen users."""

    @abstractmethod
    def to_artifacts(self) -> dict[str, tuple[bytes, str]]:
        """File name -> (bytes, format), format in :data:`FORMATS`."""

    @classmethod
    @abstractmethod
    def from_artifacts(cls, files: Mapping[str, bytes], params: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_artifacts` output (``params`` as recorded in the manifest)."""

    def params(self) -> dict[str, Any]:
        """Parameters needed by :meth:`from_artifacts` besides the files (JSON-able)."""
        return {}


@dataclass(frozen=True, slots=True)
class ModelCall:
    """The arguments of one :meth:`Recommender.recommend_unseen` call."""

    user_id: str
    k: int
    history: Sequence[str] = ()
    exclude: Collection[str] = ()
    item_features: Mapping[str, Mapping[str, float]] | None = None


@dataclass
class UserItems:
    """A user-item confidence matrix with the string ids of its rows and columns."""

    matrix: csr_matrix  # users x items, float32 confidences
    user_ids: np.ndarray  # str, row i -> user id
    item_ids: np.ndarray  # str, column j -> item id
    _user_index: dict[str, int] | None = field(default=None, repr=False)
    _item_index: dict[str, int] | None = field(default=None, repr=False)

    @property
    def user_index(self) -> dict[str, int]:
        if self._user_index is None:
            self._user_index = {u: i for i, u in enumerate(self.user_ids.tolist())}
        return self._user_index

    @property
    def item_index(self) -> dict[str, int]:
        if self._item_index is None:
            self._item_index = {it: j for j, it in enumerate(self.item_ids.tolist())}
        return self._item_index

    @property
    def n_users(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[1])


class Row(NamedTuple):
    """One row of a CSR matrix as views of its arrays (scipy's row slicing costs ~0.1 ms,
    which is a tenth of a request)."""

    indices: np.ndarray
    data: np.ndarray


def csr_row(matrix: csr_matrix, r: int) -> Row:
    start, end = matrix.indptr[r], matrix.indptr[r + 1]
    return Row(matrix.indices[start:end], matrix.data[start:end])


def index_of(ids: np.ndarray) -> dict[str, int]:
    return {x: i for i, x in enumerate(np.asarray(ids).tolist())}


def history_vector(
    history: Sequence[str],
    history_weights: Sequence[float] | None,
    item_index: Mapping[str, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Known history items as (column indices, weights); duplicates keep the largest weight."""
    if history_weights is not None and len(history_weights) != len(history):
        raise ValueError(
            f"history has {len(history)} items but history_weights has {len(history_weights)}"
        )
    if history_weights is None:  # serving's call: every weight 1, the first of repeats kept
        first = dict.fromkeys(map(item_index.get, history))
        first.pop(None, None)  # unknown items
        return (
            np.fromiter(first, dtype=np.int64, count=len(first)),
            np.ones(len(first), dtype=np.float32),
        )
    best: dict[int, float] = {}
    for n, item in enumerate(history):
        j = item_index.get(item)
        if j is None:
            continue
        w = 1.0 if history_weights is None else float(history_weights[n])
        if w > best.get(j, float("-inf")):
            best[j] = w
    cols = np.fromiter(best.keys(), dtype=np.int64, count=len(best))
    vals = np.fromiter(best.values(), dtype=np.float32, count=len(best))
    return cols, vals


def merge_history(
    row: Row | csr_matrix | None, hcols: np.ndarray, hvals: np.ndarray, *, sorted_row: bool = False
) -> tuple[np.ndarray, np.ndarray] | None:
    """A user's training row (if any) merged with fresh history columns, keeping the larger
    weight per item, as (columns, weights); None when both are empty. ``sorted_row``: the
    row's columns are strictly increasing (a canonical CSR row)."""
    # In arrays, in the order a dict would keep (the row's columns, then the new history
    # columns in history order): the fold-in sums in this order, so it is part of the
    # result. ``hcols`` are distinct (history_vector), as are a CSR row's columns.
    if row is None or row.indices.size == 0:
        if hcols.size == 0:
            return None
        return hcols.astype(np.int64), hvals.astype(np.float32)
    if sorted_row:  # binary search: the history against a long row costs O(h log n)
        at = np.minimum(np.searchsorted(row.indices, hcols), row.indices.size - 1)
        old = row.indices[at] == hcols
    else:
        same = row.indices[:, None] == hcols[None, :]
        old = same.any(axis=0)
    if not old.any():  # the usual fresh history: all of it new to the row, nothing to raise
        return (
            np.concatenate([row.indices, hcols], dtype=np.int64),
            np.concatenate([row.data, hvals], dtype=np.float32),
        )
    vals = row.data.astype(np.float32)  # a copy: the max below writes into it
    if sorted_row:
        at_row, at_hist = at[old], np.flatnonzero(old)
    else:
        at_row, at_hist = np.nonzero(same)
    vals[at_row] = np.maximum(vals[at_row], hvals[at_hist])
    new = ~old
    cols = np.concatenate([row.indices, hcols[new]], dtype=np.int64)
    return cols, np.concatenate([vals, hvals[new]], dtype=np.float32)


class TrainedInteractions:
    """What the models built on a training user-item matrix (ALS, item-kNN) share: the
    matrix with its id maps, which answers the contract's questions about users and items
    and merges a user's fresh history into their training row. Put it before
    :class:`Recommender` in the bases so these methods fill the contract's."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_items: csr_matrix
    user_index: dict[str, int]
    item_index: dict[str, int]

    def _set_interactions(
        self, user_ids: np.ndarray, item_ids: np.ndarray, user_items: csr_matrix
    ) -> None:
        self.user_ids = np.asarray(user_ids, dtype=object)
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.user_items = user_items.tocsr()
        self._canonical = bool(self.user_items.has_canonical_format)  # rows sorted, no repeats
        self.user_index = index_of(self.user_ids)
        self.item_index = index_of(self.item_ids)

    @property
    def canonical_rows(self) -> bool:
        """Each row's columns strictly increasing (sorted, no repeats)."""
        return self._canonical

    def known_user(self, user_id: str) -> bool:
        return user_id in self.user_index

    def seen_items(self, user_id: str) -> list[str]:
        u = self.user_index.get(user_id)
        return [] if u is None else self.item_ids[csr_row(self.user_items, u).indices].tolist()

    def knows_item(self, item_id: str) -> bool:
        return item_id in self.item_index

    def fresh_row(
        self, user_id: str, history: Sequence[str], history_weights: Sequence[float] | None
    ) -> tuple[int | None, tuple[np.ndarray, np.ndarray] | None]:
        """(the user's training row index or None, their training row merged with the known
        items of ``history`` as (columns, weights)). The merge is None when the history adds
        nothing to a known user (use what training learned) or there is nothing at all."""
        u = self.user_index.get(user_id)
        hcols, hvals = history_vector(history, history_weights, self.item_index)
        return u, self.merged_row(u, hcols, hvals)

    def merged_row(
        self, u: int | None, hcols: np.ndarray, hvals: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`fresh_row`'s merge, for a history already turned into columns."""
        if u is not None and hcols.size == 0:
            return None
        row = csr_row(self.user_items, u) if u is not None else None
        return merge_history(row, hcols, hvals, sorted_row=self._canonical)

    def seen_columns(self, u: int | None) -> np.ndarray:
        """The training row's item columns (empty for an unknown user)."""
        return csr_row(self.user_items, u).indices if u is not None else np.zeros(0, np.int32)


def excluded_columns(item_index: Mapping[str, int], *groups: Collection[str]) -> np.ndarray:
    cols = {item_index[i] for g in groups for i in g if i in item_index}
    return np.fromiter(cols, dtype=np.int64, count=len(cols))


def top_k(
    scores: np.ndarray, k: int, item_ids: np.ndarray, banned: np.ndarray | None = None
) -> list[tuple[str, float]]:
    """The ``k`` best columns of ``scores`` (1-D), skipping ``banned`` columns and NaN."""
    if k <= 0 or scores.size == 0:
        return []
    s = np.asarray(scores, dtype=np.float64).copy()
    s[np.isnan(s)] = -np.inf
    if banned is not None and banned.size:
        s[banned] = -np.inf
    valid = int(np.isfinite(s).sum())
    k = min(k, valid)
    if k == 0:
        return []
    idx = np.argpartition(-s, k - 1)[:k] if k < s.size else np.arange(s.size)
    # Stable tie-break on column index keeps results deterministic.
    idx = idx[np.lexsort((idx, -s[idx]))]
    return [(str(item_ids[j]), float(s[j])) for j in idx]
