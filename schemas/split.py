"""The per-user temporal split shared by replay, training evaluation and the simulator:
each user's last ``test_fraction`` of interactions (by time) is the test set."""

from __future__ import annotations

import numpy as np

TEST_FRACTION = 0.2


def temporal_test_mask(
    users: np.ndarray, ts: np.ndarray, test_fraction: float = TEST_FRACTION
) -> np.ndarray:
    """Boolean mask, True for test rows. Ties in time keep input order; a user with n
    interactions gets ``floor(n * test_fraction)`` test rows (so users with fewer than
    ``1/test_fraction`` interactions stay entirely in train)."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    n = len(users)
    if len(ts) != n:
        raise ValueError(f"users ({n}) and ts ({len(ts)}) differ in length")
    if n == 0:
        return np.zeros(0, dtype=bool)
    _, user_codes = np.unique(users, return_inverse=True)
    # Sort by user, then time, then original position (stable).
    order = np.lexsort((np.arange(n), ts, user_codes))
    sorted_users = user_codes[order]
    counts = np.bincount(user_codes)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(n) - starts[sorted_users]  # position within the user's history
    n_test = np.floor(counts * test_fraction).astype(np.int64)
    is_test_sorted = rank >= (counts - n_test)[sorted_users]
    mask = np.empty(n, dtype=bool)
    mask[order] = is_test_sorted
    return mask
