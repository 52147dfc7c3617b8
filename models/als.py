"""Implicit-feedback ALS (Hu, Koren, Volinsky 2008) fitted with ``implicit``; serving only
needs numpy: users are folded in with the same least-squares step implicit uses for
``recalculate_user=True``, so fresh history personalises even unseen users."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
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

log = logging.getLogger(__name__)

ARTIFACT = "als.npz"
_REQUIRED = ("user_ids", "item_ids", "user_factors", "item_factors")


class ALSModel(TrainedInteractions, Recommender):
    kind: ClassVar[str] = "als"

    def __init__(
        self,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        user_factors: np.ndarray,
        item_factors: np.ndarray,
        user_items: csr_matrix,
        *,
        regularization: float,
        alpha: float,
        extra_params: dict[str, Any] | None = None,
    ) -> None:
        if user_factors.shape[0] != len(user_ids) or item_factors.shape[0] != len(item_ids):
            raise ValueError("factor rows do not match the id maps")
        if user_items.shape != (len(user_ids), len(item_ids)):
            raise ValueError("user_items shape does not match the id maps")
        self._set_interactions(user_ids, item_ids, user_items)
        self.user_factors = np.ascontiguousarray(user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        self.extra_params = dict(extra_params or {})
        y = self._factors64 = self.item_factors.astype(np.float64)  # fold-in gathers rows
        self._yty = y.T @ y  # the Gram matrix every fold-in solve starts from
        self._yty_reg = self._yty + self.regularization * np.eye(self.factors)

    @property
    def factors(self) -> int:
        return int(self.item_factors.shape[1])

    @classmethod
    def fit(
        cls,
        data: UserItems,
        *,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 2.0,
        iterations: int = 15,
        random_state: int = 42,
        num_threads: int = 0,
        callback: Callable[[int], None] | None = None,
        init: ALSModel | None = None,
    ) -> Self:
        """``init``: a model fitted on the same id maps (e.g. an earlier cut of the same data)
        whose factors start the sweeps instead of random ones (a warm start: fewer
        ``iterations`` reach the same fit)."""
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        # implicit parallelises itself and asks for single-threaded BLAS (oversubscription
        # otherwise makes ALS several times slower).
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=factors,
                regularization=regularization,
                alpha=alpha,
                iterations=iterations,
                random_state=random_state,
                num_threads=num_threads,
            )
            if init is not None:
                if init.user_factors.shape != (data.matrix.shape[0], factors) or (
                    init.item_factors.shape != (data.matrix.shape[1], factors)
                ):
                    raise ValueError("the warm start's factors do not match the data")
                # Copies: implicit updates its factors in place.
                model.user_factors = init.user_factors.copy()
                model.item_factors = init.item_factors.copy()
            model.fit(
                data.matrix.astype(np.float32, copy=False),  # the shared matrix: no copy
                show_progress=False,
                callback=(lambda it, _t, _loss: callback(it)) if callback else None,
            )
        return cls(
            data.user_ids,
            data.item_ids,
            np.asarray(model.user_factors),
            np.asarray(model.item_factors),
            data.matrix,
            regularization=regularization,
            alpha=alpha,
            extra_params={"factors": factors, "iterations": iterations},
        )

    # -- scoring -----------------------------------------------------------------------
    def fold_in(self, cols: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The least-squares user factor for confidences ``values`` on items ``cols``
        (implicit's ``recalculate_user`` step: (YtY + reg I + Yt(Cu - I)Y) x = Yt Cu p)."""
        y = self._factors64[cols]
        c = self.alpha * values.astype(np.float64)
        a = self._yty_reg + (y * (c - 1.0)[:, None]).T @ y
        b = y.T @ c
        return np.linalg.solve(a, b).astype(np.float32)

    def user_vector(
        self,
        user_id: str,
        history: Sequence[str] = (),
        history_weights: Sequence[float] | None = None,
    ) -> np.ndarray | None:
        """The user's factor: learned if known and nothing new, else folded in from the
        training row plus the fresh history. None if there is nothing to go on."""
        u, merged = self.fresh_row(user_id, history, history_weights)
        return self.vector_of(u, merged)

    def vector_of(
        self, u: int | None, merged: tuple[np.ndarray, np.ndarray] | None
    ) -> np.ndarray | None:
        """:meth:`user_vector` from the training row index and :meth:`merged_row`."""
        if merged is None:
            return None if u is None else self.user_factors[u]
        cols, vals = merged
        return self.fold_in(cols, vals)

    def scores(self, vector: np.ndarray) -> np.ndarray:
        return np.asarray(self.item_factors @ vector)

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
        vec = self.user_vector(user_id, history, history_weights)
        if vec is None:
            return []
        banned = excluded_columns(self.item_index, exclude, history)
        return top_k(self.scores(vec), k, self.item_ids, banned)

    def recommend_unseen(
        self,
        user_id: str,
        k: int,
        *,
        history: Sequence[str] = (),
        exclude: Collection[str] = (),
        item_features: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[tuple[str, float]]:
        vec = self.user_vector(user_id, history)
        if vec is None:
            return []
        seen = self.seen_columns(self.user_index.get(user_id))
        banned = np.concatenate([excluded_columns(self.item_index, exclude, history), seen])
        return top_k(self.scores(vec), k, self.item_ids, banned)

    # -- artifacts ---------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"regularization": self.regularization, "alpha": self.alpha, **self.extra_params}

    def to_artifacts(self) -> dict[str, tuple[bytes, str]]:
        arrays = {
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            "user_factors": self.user_factors,
            "item_factors": self.item_factors,
            **csr_arrays("user_items", self.user_items),
        }
        return {ARTIFACT: (to_npz(arrays), "npz")}

    @classmethod
    def from_artifacts(cls, files: Mapping[str, bytes], params: dict[str, Any]) -> Self:
        if ARTIFACT not in files:
            raise ArtifactError(f"missing {ARTIFACT}", kind=cls.kind, artifact=ARTIFACT)
        a = from_npz(files[ARTIFACT], kind=cls.kind, artifact=ARTIFACT, required=_REQUIRED)
        try:
            return cls(
                a["user_ids"].astype(object),
                a["item_ids"].astype(object),
                a["user_factors"],
                a["item_factors"],
                csr_from("user_items", a),
                regularization=float(params.get("regularization", 0.05)),
                alpha=float(params.get("alpha", 1.0)),
                extra_params={
                    k: v for k, v in params.items() if k not in ("regularization", "alpha")
                },
            )
        except (KeyError, ValueError) as err:
            raise ArtifactError(
                f"{ARTIFACT} is inconsistent: {err}", kind=cls.kind, artifact=ARTIFACT
            ) from err
