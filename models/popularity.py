"""Time-decayed popularity: the fallback for users nobody knows, and the first baseline."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import orjson

from models.base import Recommender, excluded_columns, index_of, top_k
from models.errors import ArtifactError

ARTIFACT = "popularity.json"
DAY_S = 86_400.0


def decayed_counts(
    item_codes: np.ndarray,
    ts: np.ndarray,
    weights: np.ndarray,
    n_items: int,
    *,
    half_life_days: float | None,
    reference_time: float,
) -> np.ndarray:
    """Per-item sum of weights, each halved every ``half_life_days`` before the reference
    time (None or inf: no decay)."""
    if half_life_days is None or not math.isfinite(half_life_days):
        decay = np.ones(len(ts))
    else:
        age_days = np.maximum(reference_time - ts.astype(np.float64), 0.0) / DAY_S
        decay = np.exp2(-age_days / half_life_days)
    return np.bincount(item_codes, weights=weights * decay, minlength=n_items)


class PopularityModel(Recommender):
    kind: ClassVar[str] = "popularity"

    def __init__(
        self,
        item_ids: np.ndarray,
        scores: np.ndarray,
        *,
        half_life_days: float | None = None,
        reference_time: float | None = None,
    ) -> None:
        if len(item_ids) != len(scores):
            raise ValueError("item_ids and scores differ in length")
        order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64)))
        self.item_ids = np.asarray(item_ids, dtype=object)[order]
        self.scores = np.asarray(scores, dtype=np.float64)[order]
        self.half_life_days = half_life_days
        self.reference_time = reference_time
        self._index = index_of(self.item_ids)

    @classmethod
    def fit(
        cls,
        item_ids: np.ndarray,
        item_codes: np.ndarray,
        ts: np.ndarray,
        weights: np.ndarray | None = None,
        *,
        half_life_days: float | None = 30.0,
        reference_time: float | None = None,
    ) -> Self:
        """``item_codes[n]`` indexes ``item_ids`` for interaction ``n`` at epoch ``ts[n]``."""
        w = np.ones(len(item_codes)) if weights is None else np.asarray(weights, np.float64)
        ref = float(ts.max()) if reference_time is None and len(ts) else (reference_time or 0.0)
        scores = decayed_counts(
            item_codes, ts, w, len(item_ids), half_life_days=half_life_days, reference_time=ref
        )
        return cls(item_ids, scores, half_life_days=half_life_days, reference_time=ref)

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
        if not exclude and not history:
            n = min(k, len(self.item_ids))
            return [(str(self.item_ids[j]), float(self.scores[j])) for j in range(n)]
        banned = excluded_columns(self._index, exclude, history)
        return top_k(self.scores, k, self.item_ids, banned)

    def known_user(self, user_id: str) -> bool:
        return False  # the same list for everyone

    def seen_items(self, user_id: str) -> tuple[str, ...]:
        return ()  # keeps no per-user data

    def knows_item(self, item_id: str) -> bool:
        return item_id in self._index

    def score_of(self, item_id: str) -> float:
        j = self._index.get(item_id)
        return 0.0 if j is None else float(self.scores[j])

    def to_artifacts(self) -> dict[str, tuple[bytes, str]]:
        doc = {
            "half_life_days": self.half_life_days,
            "reference_time": self.reference_time,
            "items": self.item_ids.tolist(),
            "scores": self.scores.tolist(),
        }
        return {ARTIFACT: (orjson.dumps(doc), "json")}

    def params(self) -> dict[str, Any]:
        return {"half_life_days": self.half_life_days}

    @classmethod
    def from_artifacts(cls, files: Mapping[str, bytes], params: dict[str, Any]) -> Self:
        if ARTIFACT not in files:
            raise ArtifactError(f"missing {ARTIFACT}", kind=cls.kind, artifact=ARTIFACT)
        try:
            doc = orjson.loads(files[ARTIFACT])
            items = np.asarray([str(x) for x in doc["items"]], dtype=object)
            scores = np.asarray(doc["scores"], dtype=np.float64)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ArtifactError(
                f"{ARTIFACT} is malformed: {err}", kind=cls.kind, artifact=ARTIFACT
            ) from err
        if items.shape != scores.shape:
            raise ArtifactError(
                f"{ARTIFACT}: items and scores differ in length", kind=cls.kind, artifact=ARTIFACT
            )
        return cls(
            items,
            scores,
            half_life_days=doc.get("half_life_days"),
            reference_time=doc.get("reference_time"),
        )
