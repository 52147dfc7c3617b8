"""A deliberately bad model: a random ranking of the catalog, fixed per user.

Useful as the negative control of a canary rollout (`streamrec rollout` must roll it back)
and as a floor in offline comparisons. It answers every user (``known_user`` is True) so
that serving routes canary traffic to it instead of falling back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import orjson

from models.base import Recommender, excluded_columns, index_of, top_k
from models.errors import ArtifactError

ARTIFACT = "random.json"


class RandomModel(Recommender):
    kind: ClassVar[str] = "random"

    def __init__(self, item_ids: Sequence[str], *, seed: int = 0) -> None:
        self.item_ids = np.asarray([str(i) for i in item_ids], dtype=object)
        self.seed = int(seed)
        self._index = index_of(self.item_ids)

    def _scores(self, user_id: str) -> np.ndarray:
        # Fixed per (seed, user): the same user sees the same list, as from a real model.
        digest = hashlib.blake2b(f"{self.seed}\x00{user_id}".encode(), digest_size=8).digest()
        rng = np.random.default_rng(int.from_bytes(digest, "big"))
        return rng.random(len(self.item_ids))

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
        banned = excluded_columns(self._index, exclude, history)
        return top_k(self._scores(user_id), k, self.item_ids, banned)

    def known_user(self, user_id: str) -> bool:
        return True

    def seen_items(self, user_id: str) -> tuple[str, ...]:
        return ()  # keeps no per-user data

    def knows_item(self, item_id: str) -> bool:
        return item_id in self._index

    def params(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def to_artifacts(self) -> dict[str, tuple[bytes, str]]:
        return {ARTIFACT: (orjson.dumps({"items": self.item_ids.tolist()}), "json")}

    @classmethod
    def from_artifacts(cls, files: Mapping[str, bytes], params: dict[str, Any]) -> Self:
        if ARTIFACT not in files:
            raise ArtifactError(f"missing {ARTIFACT}", kind=cls.kind, artifact=ARTIFACT)
        try:
            items = [str(x) for x in orjson.loads(files[ARTIFACT])["items"]]
        except (orjson.JSONDecodeError, KeyError, TypeError) as err:
            raise ArtifactError(
                f"{ARTIFACT} is malformed: {err}", kind=cls.kind, artifact=ARTIFACT
            ) from err
        return cls(items, seed=int(params.get("seed", 0)))
