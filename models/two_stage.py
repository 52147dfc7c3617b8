"""Two stages: ALS proposes candidates, LightGBM LambdaRank re-orders them with richer
features; time-decayed popularity answers when ALS has nothing to go on."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np

from models.als import ALSModel
from models.base import ModelCall, Recommender, csr_row, excluded_columns, history_vector
from models.errors import ArtifactError
from models.features import (
    FEATURES,
    RECENT_ITEMS,
    ItemStats,
    LiveItemFeatures,
    UserProfile,
    feature_matrix,
    override_block,
)
from models.npz import from_npz, to_npz
from models.popularity import PopularityModel
from models.ranker import ARTIFACT as RANKER_ARTIFACT
from models.ranker import Ranker
from models.signals import ALL_FEATURES, Signals, assemble

FEATURES_ARTIFACT = "features.npz"


class CandidateGenerator:
    """ALS candidates of a user together with their ranker features."""

    def __init__(
        self,
        als: ALSModel,
        stats: ItemStats,
        user_rating_mean: np.ndarray,
        user_recent: np.ndarray,
        *,
        signals: Signals | None = None,
        feature_names: Sequence[str] = FEATURES,
    ) -> None:
        """``feature_names``: the ranker's features, in order (a version's own list: any of
        ``models.signals.ALL_FEATURES`` whose artifacts ``signals`` holds)."""
        n_users = len(als.user_ids)
        if (
            stats.table.shape[0] != len(als.item_ids)
            or len(user_rating_mean) != n_users
            or user_recent.shape[0] != n_users
        ):
            raise ValueError("feature tables do not match the ALS id maps")
        self.signals = signals or Signals()
        self.feature_names = tuple(feature_names)
        unknown = [n for n in self.feature_names if n not in ALL_FEATURES]
        if unknown:
            raise ValueError(f"features this code does not compute: {unknown}")
        lacking = self.signals.missing_for(self.feature_names)
        if lacking:
            raise ValueError(f"the features {list(self.feature_names)} need {lacking}")
        seq = self.signals.sasrec
        if seq is not None and not np.array_equal(seq.item_ids, als.item_ids):
            raise ValueError("SASRec's item ids are not ALS's")
        self._seq = seq is not None and (
            self.signals.seq_candidates > 0 or any(n.startswith("sasrec") for n in feature_names)
        )
        self.als = als
        self.stats = stats
        self.user_rating_mean = user_rating_mean
        self.user_recent = user_recent  # n_users x RECENT_ITEMS item columns, -1 padded
        self._live: tuple[np.ndarray, np.ndarray] | None = None  # (dense live, merged)
        norms = np.linalg.norm(als.item_factors, axis=1, keepdims=True)
        self.unit_factors = als.item_factors / np.maximum(norms, 1e-9)

    def profile(
        self, user_id: str, history_cols: np.ndarray, items: np.ndarray | None = None
    ) -> UserProfile:
        """``items``: the sorted union of the training row and ``history_cols`` as int64,
        when the caller has it (serving's batch sorts the merged row)."""
        u = self.als.user_index.get(user_id)
        if items is None:
            # The sorted union of training and fresh items, through a mask: np.union1d sorts.
            mask = np.zeros(len(self.als.item_ids), dtype=bool)
            if u is not None:
                mask[csr_row(self.als.user_items, u).indices] = True
            mask[history_cols] = True
            items = np.flatnonzero(mask).astype(np.int64)
        mean = float(self.user_rating_mean[u]) if u is not None else float("nan")
        # Fresh history (newest first) before the training-time newest items.
        stored = self.user_recent[u] if u is not None else np.zeros(0, np.int64)
        recent = list(dict.fromkeys([*history_cols.tolist(), *stored[stored >= 0].tolist()]))
        return UserProfile(
            items=items, rating_mean=mean, recent=np.asarray(recent[:RECENT_ITEMS], np.int64)
        )

    def generate(
        self,
        user_id: str,
        n: int,
        *,
        history: Sequence[str] = (),
        history_weights: Sequence[float] | None = None,
        exclude: Collection[str] = (),
        item_features: Mapping[str, Mapping[str, float]] | None = None,
        banned: np.ndarray | None = None,
        exclude_seen: bool = False,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(candidate item columns best-first by ALS, feature matrix), or None when the user
        has no representation. ``banned`` adds columns to exclude (training uses it);
        ``exclude_seen`` bans the user's training row too (serving's ask)."""
        als = self.als
        u = als.user_index.get(user_id)
        # The history's known columns, once: the fold-in, the bans and the profile share them.
        hcols, hvals = history_vector(history, history_weights, als.item_index)
        vec = als.vector_of(u, als.merged_row(u, hcols, hvals))
        if vec is None:
            return None
        scores = als.scores(vec).astype(np.float64)
        bans = [excluded_columns(als.item_index, exclude), hcols]
        if exclude_seen:
            bans.append(als.seen_columns(u))
        if banned is not None and banned.size:
            bans.append(banned)
        scores[np.concatenate(bans)] = -np.inf
        n = min(n, int(np.isfinite(scores).sum()))
        if n <= 0:
            return np.zeros(0, np.int64), np.zeros((0, len(self.feature_names)), np.float32)
        cand = np.argpartition(-scores, n - 1)[:n] if n < scores.size else np.arange(scores.size)
        seq = self.signals.sasrec_scores(user_id, history) if self._seq else None
        if seq is not None and self.signals.seq_candidates > 0:
            cand = self._with_sequential(cand, seq, scores)
        cand = cand[np.lexsort((cand, -scores[cand]))]
        table, overrides = None, None
        if isinstance(item_features, LiveItemFeatures):
            table = self.live_table(item_features.dense(als.item_ids))
        else:
            overrides = override_block(als.item_ids, cand, item_features or {})
        profile = self.profile(user_id, hcols)
        x = feature_matrix(
            self.stats,
            profile,
            cand,
            scores[cand],
            unit_factors=self.unit_factors,
            overrides=overrides,
            item_table=table,
        )
        if self.feature_names != FEATURES:
            row = als.merged_row(u, hcols, hvals)
            if row is None and u is not None:
                got = csr_row(als.user_items, u)
                row = (got.indices, got.data)
            extra = self.signals.columns(
                self.feature_names, cand, recent=profile.recent, row=row, seq_scores=seq
            )
            x = assemble(self.feature_names, x, extra)
        return cand, x

    def _with_sequential(self, cand: np.ndarray, seq: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``cand`` and SASRec's best ``seq_candidates`` items among those ALS may offer."""
        s = np.where(np.isfinite(scores), seq, -np.inf)
        m = min(self.signals.seq_candidates, int(np.isfinite(s).sum()))
        if m <= 0:
            return cand
        top = np.argpartition(-s, m - 1)[:m] if m < s.size else np.arange(s.size)
        return np.union1d(cand, top)

    def live_table(self, dense: np.ndarray | None) -> np.ndarray:
        """The item table with a live table's values (``dense``, NaN: none) in place, built
        once per live table (a request then gathers its candidates' rows)."""
        if dense is None:
            return self.stats.table
        memo = self._live
        if memo is None or memo[0] is not dense:
            # Races between threads only build the same array twice.
            memo = self._live = (dense, np.where(np.isnan(dense), self.stats.table, dense))
        return memo[1]


class TwoStageModel(Recommender):
    kind: ClassVar[str] = "als+lgbm"

    def __init__(
        self,
        generator: CandidateGenerator,
        ranker: Ranker,
        popularity: PopularityModel,
        *,
        n_candidates: int = 200,
    ) -> None:
        self.generator = generator
        self.ranker = ranker
        self.popularity = popularity
        self.n_candidates = n_candidates

    @property
    def als(self) -> ALSModel:
        return self.generator.als

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
        return self._recommend(user_id, k, history, history_weights, exclude, item_features)

    def recommend_unseen(
        self,
        user_id: str,
        k: int,
        *,
        history: Sequence[str] = (),
        exclude: Collection[str] = (),
        item_features: Mapping[str, Mapping[str, float]] | None = None,
    ) -> list[tuple[str, float]]:
        return self._recommend(user_id, k, history, None, exclude, item_features, seen=True)

    def recommend_unseen_batch(self, calls: Sequence[ModelCall]) -> list[list[tuple[str, float]]]:
        """The calls ranked together (``models.two_stage_batch``), as one by one."""
        from models.two_stage_batch import recommend_unseen_batch

        return recommend_unseen_batch(self, calls)

    def _recommend(
        self,
        user_id: str,
        k: int,
        history: Sequence[str],
        history_weights: Sequence[float] | None,
        exclude: Collection[str],
        item_features: Mapping[str, Mapping[str, float]] | None,
        *,
        seen: bool = False,
        reference: bool = False,
    ) -> list[tuple[str, float]]:
        """``seen``: ban the training row by column; ``reference``: score with LightGBM
        itself instead of the compiled trees (tests compare the two)."""
        got = self.generator.generate(
            user_id,
            max(self.n_candidates, k),
            history=history,
            history_weights=history_weights,
            exclude=exclude,
            item_features=item_features,
            exclude_seen=seen,
        )
        if got is None:  # nobody knows this user yet: the popular items, minus the exclusions
            return self.popularity.recommend(user_id, k, history=history, exclude=exclude)
        cand, x = got
        if cand.size == 0:
            return []
        scores = self.ranker.predict(x) if reference else self.ranker.predict_fast(x)
        order = np.lexsort((np.arange(cand.size), -scores))[:k]
        ids = self.als.item_ids
        return [(str(ids[cand[i]]), float(scores[i])) for i in order]

    def known_user(self, user_id: str) -> bool:
        return self.als.known_user(user_id)

    def seen_items(self, user_id: str) -> list[str]:
        return self.als.seen_items(user_id)

    def knows_item(self, item_id: str) -> bool:
        return self.als.knows_item(item_id)

    def params(self) -> dict[str, Any]:
        return {
            "als": self.als.params(),
            "popularity": self.popularity.params(),
            "n_candidates": self.n_candidates,
            "features": list(self.ranker.feature_names),
            **self.generator.signals.params(),
        }

    def to_artifacts(self) -> dict[str, tuple[bytes, str]]:
        feats = {
            **self.generator.stats.to_arrays(),
            "user_rating_mean": self.generator.user_rating_mean.astype(np.float32),
            "user_recent": self.generator.user_recent.astype(np.int32),
        }
        return {
            **self.als.to_artifacts(),
            **self.popularity.to_artifacts(),
            FEATURES_ARTIFACT: (to_npz(feats), "npz"),
            RANKER_ARTIFACT: (self.ranker.to_text(), "lightgbm-text"),
            **self.generator.signals.to_artifacts(),
        }

    @classmethod
    def from_artifacts(cls, files: Mapping[str, bytes], params: dict[str, Any]) -> Self:
        for needed in (FEATURES_ARTIFACT, RANKER_ARTIFACT):
            if needed not in files:
                raise ArtifactError(f"missing {needed}", kind=cls.kind, artifact=needed)
        als = ALSModel.from_artifacts(files, params.get("als", {}))
        pop = PopularityModel.from_artifacts(files, params.get("popularity", {}))
        a = from_npz(
            files[FEATURES_ARTIFACT],
            kind=cls.kind,
            artifact=FEATURES_ARTIFACT,
            required=(
                "item_table",
                "item_genres",
                "genre_names",
                "reference_time",
                "user_rating_mean",
            ),
        )
        # The version's own feature list (versions before per-version lists: FEATURES).
        names = tuple(params.get("features", FEATURES))
        unknown = [n for n in names if n not in ALL_FEATURES]
        if unknown:
            raise ArtifactError(
                f"the ranker was trained on features this code does not compute: {unknown}",
                kind=cls.kind,
                artifact=RANKER_ARTIFACT,
            )
        ranker = Ranker.from_text(files[RANKER_ARTIFACT], names, kind=cls.kind)
        signals = Signals.from_artifacts(files, params, kind=cls.kind)
        lacking = signals.missing_for(names)
        if lacking:
            raise ArtifactError(
                f"missing {', '.join(lacking)} (the ranker's features need it)",
                kind=cls.kind,
                artifact=lacking[0],
            )
        try:
            generator = CandidateGenerator(
                als, ItemStats.from_arrays(a), a["user_rating_mean"], a["user_recent"],
                signals=signals, feature_names=names,
            )  # fmt: skip
        except ValueError as err:
            raise ArtifactError(str(err), kind=cls.kind, artifact=FEATURES_ARTIFACT) from err
        return cls(generator, ranker, pop, n_candidates=int(params.get("n_candidates", 200)))
