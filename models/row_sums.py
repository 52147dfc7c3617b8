"""Sums of weighted sparse rows and ranks within runs: what the ranker's extra features
(models.signals) compute per user, one user at a time or a batch of users at once, with
bitwise the same values either way (issue 14)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import csr_matrix

try:  # private, but scipy's own C routines (pinned scipy; see rows_dot)
    from scipy.sparse._sparsetools import csc_matvec as _csc_matvec
    from scipy.sparse._sparsetools import csr_row_index as _csr_row_index
except ImportError:  # pragma: no cover - another scipy: the numpy gather below
    _csr_row_index = _csc_matvec = None


def rows_dot(m: csr_matrix, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``weights @ m[rows]`` as a dense vector (sparse rows gathered, no matrix product):
    each column's sum adds the rows' entries in the order of ``rows``, from 0."""
    if continues(m):
        # Two of scipy's C loops (issue 14; the kNN row, ~13k stored entries a MovieLens
        # user, was a quarter of a serving model call), through rows_dot_many: the rows'
        # entries copied out (the routine behind ``m[rows]``), then scattered as a CSC
        # matrix-vector product, ``out[col] += value * weight`` row by row in stored order
        # -- the additions the numpy path's bincount makes, in the same order on the same
        # float64 products, so bitwise the same sums without its temporaries (~2x).
        got: np.ndarray = rows_dot_many(m, [rows], [weights])[0]
        return got
    starts = m.indptr[rows]
    lengths = m.indptr[rows + 1] - starts
    total = int(lengths.sum())
    if not total:
        return np.zeros(m.shape[1], np.float64)
    w = np.repeat(np.asarray(weights, np.float64), lengths)
    # Every stored position of the rows, without a Python loop over them (a user's kNN row
    # has ~100 items): each row's start, shifted by its offset in the concatenation.
    shift = starts - (np.cumsum(lengths) - lengths)
    pos = np.repeat(shift, lengths) + np.arange(total)
    return np.bincount(m.indices[pos], weights=m.data[pos] * w, minlength=m.shape[1])


def continues(m: csr_matrix) -> bool:
    """Whether :func:`rows_dot_many` can continue sums (``start_from``) over ``m``: scipy's C
    loops add row after row into the output, so the sum of a row list's head is exactly the
    state the sum of the whole list passes through."""
    return (
        _csr_row_index is not None and _csc_matvec is not None and m.indptr.dtype == m.indices.dtype
    )


def rows_dot_many(
    m: csr_matrix,
    rows: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    *,
    start_from: Sequence[np.ndarray | None] | None = None,
) -> np.ndarray:
    """``[rows_dot(m, r, w) for r, w in zip(rows, weights)]`` stacked (serving's batch of
    users, issue 14): all users' rows copied out by one C call, then each user's summed by
    :func:`rows_dot`'s scatter into its own output row -- the same additions in the same
    order, bitwise the same rows, without the per-call numpy set-up. ``start_from[i]``
    (only where :func:`continues`): ``rows_dot`` of rows that come before ``rows[i]``, which
    the sum continues -- bitwise ``rows_dot`` of the two lists joined."""
    out = np.zeros((len(rows), m.shape[1]), np.float64)
    if start_from is not None:
        if not continues(m):
            raise ValueError("rows_dot_many cannot continue sums without scipy's C loops")
        for i, head in enumerate(start_from):
            if head is not None:
                out[i] = head
    if not continues(m):
        for i, (r, w) in enumerate(zip(rows, weights, strict=True)):
            out[i] = rows_dot(m, r, w)
        return out
    if not rows:
        return out
    at = np.concatenate(rows).astype(m.indptr.dtype, copy=False)
    w = np.concatenate([np.asarray(x, np.float64) for x in weights])
    if w.shape != at.shape:  # the C loop would read past the weights
        raise ValueError("rows_dot_many needs one weight per row")
    local = np.zeros(len(at) + 1, m.indptr.dtype)  # where each copied row starts
    np.cumsum(m.indptr[at + 1] - m.indptr[at], out=local[1:])
    total = int(local[-1])
    if not total:
        return out
    cols = np.empty(total, m.indices.dtype)
    data = np.empty(total, m.data.dtype)
    _csr_row_index(len(at), at, m.indptr, m.indices, m.data, cols, data)
    data64 = data.astype(np.float64)
    start = 0
    for i, r in enumerate(rows):
        end = start + len(r)
        # The user's slice of the row starts: absolute offsets into the shared copies.
        _csc_matvec(
            m.shape[1], end - start, local[start : end + 1], cols, data64, w[start:end], out[i]
        )
        start = end
    return out


def rank_desc(x: np.ndarray) -> np.ndarray:
    """0 for the largest value; ties keep the candidates' order."""
    r = np.empty(len(x), np.float32)
    r[np.argsort(-x, kind="stable")] = np.arange(len(x))
    return r


def rank_desc_many(x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """:func:`rank_desc` of each of the consecutive runs of ``x`` of ``sizes``, concatenated,
    from one row-wise stable sort (each run padded with -inf at its end, which a stable sort
    keeps after the run's values: the same order of them)."""
    if not x.size:
        return np.zeros(0, np.float32)
    width = int(sizes.max())
    if (sizes == width).all():  # the usual batch: the runs are the rows, no padding
        order = np.argsort(-x.reshape(len(sizes), width), axis=1, kind="stable")
        keep: np.ndarray | slice = slice(None)
    elif np.isnan(x).any():  # NaN would sort after the padding
        ends = np.cumsum(sizes)
        return np.concatenate([rank_desc(x[e - n : e]) for e, n in zip(ends, sizes, strict=True)])
    else:
        keep = np.arange(width)[None, :] < sizes[:, None]
        pad = np.full(keep.shape, -np.inf)
        pad[keep] = x
        order = np.argsort(-pad, axis=1, kind="stable")
    ranks = np.empty(order.shape, np.float32)
    ranks[np.arange(len(sizes))[:, None], order] = np.arange(width, dtype=np.float32)
    return ranks[keep].ravel()
