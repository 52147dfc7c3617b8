"""Ranker features of (user, candidate item) pairs. Lives in ``models`` because serving
computes the same features at request time as training did offline.

Item statistics are frozen at the model's reference time (the newest training event);
serving may override any :data:`ITEM_FEATURES` value per item with a live one through
``recommend(item_features=...)``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

DAY_S = 86_400.0
POP_WINDOWS_DAYS = (7, 30, 90)

# Per-item features (overridable with live values by name).
ITEM_FEATURES = (
    "pop_decay",
    *(f"pop_{d}d" for d in POP_WINDOWS_DAYS),
    "pop_all",
    "rating_mean",
    "rating_count",
    "item_age_days",
    "release_age_years",
)
FEATURES = (
    "als_score",
    "als_rank",
    "als_score_gap",  # distance to the user's best candidate: scale-free ALS evidence
    *ITEM_FEATURES,
    "genre_affinity",
    "genre_max",
    "user_activity",
    "user_rating_mean",
    "pop_vs_user",  # item log-popularity minus the user's mean: mainstream vs niche taste
    # Cosine (ALS item factors) to the user's newest items: what they are into right now.
    "recent_sim_mean",
    "recent_sim_max",
)
RECENT_ITEMS = 10


@dataclass
class ItemStats:
    """Item statistics aligned with the model's item ids."""

    table: np.ndarray  # n_items x len(ITEM_FEATURES), float32 (NaN: unknown)
    genres: np.ndarray  # n_items x n_genres, float32 0/1
    genre_names: np.ndarray  # str
    reference_time: float

    @cached_property
    def genre_counts(self) -> np.ndarray:
        """Genres per item, at least 1 (the affinity's denominator)."""
        return np.asarray(np.maximum(self.genres.sum(axis=1), 1.0))

    @cached_property
    def genre_slots(self) -> np.ndarray:
        """Per item, its genres' columns padded with ``n_genres`` (a slot whose value is 0):
        ``items x (most genres of an item + 1)``. Serving's batch takes each candidate's best
        genre over these few slots instead of all genres (the max of 0/1 genres times a
        profile is the best of the item's genres, or 0 when it lacks any genre)."""
        n_items, n_genres = self.genres.shape
        has = self.genres > 0
        counts = has.sum(axis=1)
        width = int(counts.max(initial=0)) + 1
        # Each item's genre columns first, in column order (a stable sort of "lacks it").
        first = np.argsort(~has, axis=1, kind="stable")[:, : min(width, n_genres)]
        slots = np.full((n_items, width), n_genres, dtype=np.intp)
        own = np.arange(first.shape[1]) < counts[:, None]
        slots[:, : first.shape[1]] = np.where(own, first, n_genres)
        full = counts == n_genres  # every genre: no zero among its products
        slots[full, n_genres:] = first[full, :1]
        return slots

    @cached_property
    def log_pop(self) -> np.ndarray:
        return np.asarray(np.log1p(self.table[:, ITEM_FEATURES.index("pop_all")]))

    @classmethod
    def build(
        cls,
        n_items: int,
        item_codes: np.ndarray,
        ts: np.ndarray,
        pop_decay: np.ndarray,
        *,
        rating_codes: np.ndarray,
        ratings: np.ndarray,
        genres: np.ndarray,
        genre_names: np.ndarray,
        release_years: np.ndarray,
        reference_time: float,
    ) -> ItemStats:
        """From interactions (``item_codes`` at epoch ``ts``) and rate events."""
        cols: dict[str, np.ndarray] = {"pop_decay": pop_decay.astype(np.float64)}
        for d in POP_WINDOWS_DAYS:
            recent = ts >= reference_time - d * DAY_S
            cols[f"pop_{d}d"] = np.bincount(item_codes[recent], minlength=n_items)
        cols["pop_all"] = np.bincount(item_codes, minlength=n_items)
        count = np.bincount(rating_codes, minlength=n_items).astype(np.float64)
        total = np.bincount(rating_codes, weights=ratings, minlength=n_items)
        with np.errstate(invalid="ignore", divide="ignore"):
            cols["rating_mean"] = np.where(count > 0, total / count, np.nan)
        cols["rating_count"] = count
        first = np.full(n_items, np.inf)
        np.minimum.at(first, item_codes, ts.astype(np.float64))
        cols["item_age_days"] = np.where(
            np.isfinite(first), (reference_time - first) / DAY_S, np.nan
        )
        ref_year = 1970 + reference_time / (365.25 * DAY_S)
        cols["release_age_years"] = ref_year - release_years.astype(np.float64)  # NaN stays
        table = np.column_stack([cols[name] for name in ITEM_FEATURES]).astype(np.float32)
        return cls(table, genres.astype(np.float32), genre_names, reference_time)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "item_table": self.table,
            "item_genres": self.genres,
            "genre_names": self.genre_names,
            "reference_time": np.asarray([self.reference_time]),
        }

    @classmethod
    def from_arrays(cls, a: Mapping[str, np.ndarray]) -> ItemStats:
        return cls(
            a["item_table"],
            a["item_genres"],
            a["genre_names"].astype(object),
            float(a["reference_time"][0]),
        )


@dataclass
class UserProfile:
    """What the features need to know about one user."""

    items: np.ndarray  # item columns the user interacted with
    rating_mean: float  # NaN when the user never rated
    recent: np.ndarray  # up to RECENT_ITEMS newest item columns, newest first


def feature_matrix(
    stats: ItemStats,
    user: UserProfile,
    candidates: np.ndarray,
    als_scores: np.ndarray,
    *,
    unit_factors: np.ndarray,
    overrides: np.ndarray | None = None,
    item_table: np.ndarray | None = None,
) -> np.ndarray:
    """``len(candidates) x len(FEATURES)`` float32. ``als_scores`` are the candidates'
    ALS scores, best first; ``unit_factors`` the L2-normalised ALS item factors;
    ``overrides`` optionally replaces the item block (same shape as
    ``stats.table[candidates]``; NaN keeps the frozen value), or ``item_table`` the whole
    item table with the overrides already applied (serving keeps one per live table)."""
    n = len(candidates)
    if item_table is not None:
        item_block = item_table[candidates]
    else:
        item_block = stats.table[candidates]
        if overrides is not None:
            item_block = np.where(np.isnan(overrides), item_block, overrides)
    cand_genres = stats.genres[candidates]
    if user.items.size and stats.genres.shape[1]:
        profile = stats.genres[user.items].mean(axis=0)
        affinity = (cand_genres @ profile) / stats.genre_counts[candidates]
        gmax = (cand_genres * profile).max(axis=1)
    else:
        affinity = gmax = np.full(n, np.nan, np.float32)
    log_pop = stats.log_pop
    user_pop = float(log_pop[user.items].mean()) if user.items.size else np.nan
    out = np.empty((n, len(FEATURES)), dtype=np.float32)
    out[:, 0] = als_scores
    out[:, 1] = np.arange(n)
    out[:, 2] = (als_scores[0] - als_scores) if n else 0.0
    out[:, 3 : 3 + len(ITEM_FEATURES)] = item_block
    base = 3 + len(ITEM_FEATURES)
    out[:, base] = affinity
    out[:, base + 1] = gmax
    out[:, base + 2] = np.log1p(user.items.size)
    out[:, base + 3] = user.rating_mean
    out[:, base + 4] = log_pop[candidates] - user_pop
    if user.recent.size:
        sims = unit_factors[user.recent] @ unit_factors[candidates].T  # recent x candidates
        out[:, base + 5], out[:, base + 6] = recent_similarity(sims)
    else:
        out[:, base + 5 :] = np.nan
    return out


def recent_similarity(sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, max) over the recent items of cosine similarities laid out ``(..., recent,
    candidates)``. The mean adds the recent items' rows one after another, in order: a batch
    of users (a stack of these) gets bitwise the values of one user alone, and the additions
    run along the candidates (numpy's mean over a short last axis was ~5% of a model call)."""
    total = sims[..., 0, :].copy()
    for i in range(1, sims.shape[-2]):
        total += sims[..., i, :]
    return total / np.float32(sims.shape[-2]), sims.max(axis=-2)


def override_block(
    item_ids: np.ndarray, candidates: np.ndarray, item_features: Mapping[str, Mapping[str, float]]
) -> np.ndarray | None:
    """Live per-item values in the layout of the item block (NaN where not given)."""
    if not item_features:
        return None
    block = np.full((len(candidates), len(ITEM_FEATURES)), np.nan, dtype=np.float32)
    pos = {name: i for i, name in enumerate(ITEM_FEATURES)}
    hit = False
    for r, j in enumerate(candidates.tolist()):
        live = item_features.get(item_ids[j])
        if not live:
            continue
        for name, value in live.items():
            col = pos.get(name)
            if col is not None and value is not None:
                block[r, col] = float(value)
                hit = True
    return block if hit else None


class LiveItemFeatures(Mapping[str, Mapping[str, float]]):
    """A read-only item -> live features table (serving's snapshot of Redis). Being
    immutable, it memoises its dense form per model item-id array, so a model call costs a
    row lookup instead of a Python loop over its candidates; a refresh builds a new one."""

    def __init__(self, features: Mapping[str, Mapping[str, float]]) -> None:
        self._features = features
        self._dense: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._lock = threading.Lock()  # model calls run on several threads

    def __getitem__(self, item: str) -> Mapping[str, float]:
        return self._features[item]

    def __iter__(self) -> Iterator[str]:
        return iter(self._features)

    def __len__(self) -> int:
        return len(self._features)

    def dense(self, item_ids: np.ndarray) -> np.ndarray | None:
        """``len(item_ids) x len(ITEM_FEATURES)`` live values (NaN: not given), or None when
        none of ``item_ids`` has any; ``override_block`` of every item."""
        hit = self._dense.get(id(item_ids))
        if hit is None or hit[0] is not item_ids:
            with self._lock:
                hit = self._dense.get(id(item_ids))
                if hit is None or hit[0] is not item_ids:
                    block = override_block(item_ids, np.arange(len(item_ids)), self._features)
                    # The ids array is kept with its block so its id() cannot be reused.
                    hit = self._dense[id(item_ids)] = (item_ids, block)
        return hit[1]
