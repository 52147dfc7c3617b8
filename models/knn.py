"""Item-item nearest neighbours (``implicit.nearest_neighbours``): the classic baseline.
A user's scores are their item row times the item-item similarity matrix, exactly as
implicit scores; serving only needs scipy."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
from scipy.sparse import csr_matrix

from models.base import (
    Recommender,
    TrainedInteractions,
    UserItems,
    excluded_columns,
    top_k,
)
from models.errors import ArtifactError
from models.npz import csr_arrays, csr_from, from_npz, to_npz

ARTIFACT = "knn.npz"
SIMILARITIES = ("cosine", "bm25", "tfidf")


class ItemKNNModel(TrainedInteractions, Recommender):
    kind: ClassVar[str] = "item-knn"

    def __init__(
        self,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        similarity: csr_matrix,
        user_items: csr_matrix,
        *,
        params: dict[str, Any] | None = None,
    ) -> None:
        n = len(item_ids)
        if similarity.shape != (n, n) or user_items.shape != (len(user_ids), n):
            raise ValueError("similarity/user_items shapes do not match the id maps")
        self._set_interactions(user_ids, item_ids, user_items)
        self.similarity = similarity.tocsr()
        self._params = dict(params or {})

    @classmethod
    def fit(
        cls,
        data: UserItems,
        *,
        neighbours: int = 50,
        similarity: str = "cosine",
        num_threads: int = 0,
    ) -> Self:
        from implicit.nearest_neighbours import (
            BM25Recommender,
            CosineRecommender,
            TFIDFRecommender,
        )
        from threadpoolctl import threadpool_limits

        classes = {"cosine": CosineRecommender, "bm25": BM25Recommender, "tfidf": TFIDFRecommender}
        if similarity not in classes:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        with threadpool_limits(1, "blas"):
            model = classes[similarity](K=neighbours, num_threads=num_threads)
            model.fit(data.matrix.astype(np.float32, copy=False), show_progress=False)
        return cls(
            data.user_ids,
            data.item_ids,
            model.similarity.astype(np.float32),
            data.matrix,
            params={"neighbours": neighbours, "similarity": similarity},
        )

    def user_row(
        self,
        user_id: str,
        history: Sequence[str] = (),
        history_weights: Sequence[float] | None = None,
    ) -> csr_matrix | None:
        u, merged = self.fresh_row(user_id, history, history_weights)
        if merged is None:
            return None if u is None else self.user_items[u]
        cols, vals = merged
        return csr_matrix(
            (vals, (np.zeros(len(cols), dtype=np.int64), cols)), shape=(1, len(self.item_ids))
        )

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
        row = self.user_row(user_id, history, history_weights)
        if row is None:
            return []
        scores = np.asarray((row @ self.similarity).todense()).ravel()
        self._drop_unreached(scores, row)
        banned = excluded_columns(self.item_index, exclude, history)
        return top_k(scores, k, self.item_ids, banned)

    def _drop_unreached(self, scores: np.ndarray, row: csr_matrix) -> None:
        """Set to NaN (not recommendations) the items none of ``row``'s items points at."""
        # Items no neighbour points at score exactly 0.
        scores[scores <= 0] = np.nan

    def params(self) -> dict[str, Any]:
        return dict(self._params)

    def to_artifacts(self) -> dict[str, tuple[bytes, str]]:
        arrays = {
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            **csr_arrays("similarity", self.similarity),
            **csr_arrays("user_items", self.user_items),
        }
        return {ARTIFACT: (to_npz(arrays), "npz")}

    @classmethod
    def from_artifacts(cls, files: Mapping[str, bytes], params: dict[str, Any]) -> Self:
        if ARTIFACT not in files:
            raise ArtifactError(f"missing {ARTIFACT}", kind=cls.kind, artifact=ARTIFACT)
        a = from_npz(
            files[ARTIFACT], kind=cls.kind, artifact=ARTIFACT, required=("user_ids", "item_ids")
        )
        try:
            return cls(
                a["user_ids"].astype(object),
                a["item_ids"].astype(object),
                csr_from("similarity", a),
                csr_from("user_items", a),
                params=params,
            )
        except (KeyError, ValueError) as err:
            raise ArtifactError(
                f"{ARTIFACT} is inconsistent: {err}", kind=cls.kind, artifact=ARTIFACT
            ) from err
