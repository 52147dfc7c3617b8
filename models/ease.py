"""EASE^R (Steck 2019): a closed-form item-item model. With G = XᵀX + λI and P = G⁻¹, the
weights are B = I - P·diag(1/diag(P)) (zero diagonal), and a user's scores are their item
row times B. Fitting is one dense inversion, so it is limited to the ``max_items`` most
interacted items (the rest are never recommended by it); B is then pruned to each item's
``neighbours`` largest weights so that serving needs only a sparse row-times-matrix product,
exactly like item-kNN (whose artifact layout and serving code it reuses)."""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np
from scipy.sparse import csr_matrix

from models.base import UserItems
from models.knn import ItemKNNModel


def prune_rows(dense: np.ndarray, keep: int, *, block: int = 1024) -> csr_matrix:
    """Each row's ``keep`` largest entries as a CSR matrix (the rest are dropped), a block
    of rows at a time so the argpartition indices never cost more than the block."""
    n_rows, n_cols = dense.shape
    keep = min(keep, n_cols)
    rows, cols, vals = [], [], []
    for lo in range(0, n_rows, block):
        part = dense[lo : lo + block]
        c = np.argpartition(-part, keep - 1, axis=1)[:, :keep]
        v = np.take_along_axis(part, c, axis=1)
        ok = v != 0
        r = np.broadcast_to(np.arange(lo, lo + len(part))[:, None], c.shape)
        rows.append(r[ok])
        cols.append(c[ok])
        vals.append(v[ok].astype(np.float32))
    return csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_rows, n_cols),
    )


def spd_inverse(a: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix by Cholesky (LAPACK potrf +
    potri, in place on ``a``): about half the work of a general LU inverse."""
    from scipy.linalg import lapack

    c, info = lapack.dpotrf(a, lower=True, overwrite_a=True, clean=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"the Gram matrix is not positive definite (potrf {info})")
    inv, info = lapack.dpotri(c, lower=True, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"potri failed ({info})")
    upper = np.triu_indices_from(inv, 1)
    inv[upper] = inv.T[upper]  # potri fills one triangle only
    return np.asarray(inv)


class EaseModel(ItemKNNModel):
    kind: ClassVar[str] = "ease"

    @classmethod
    def fit(  # type: ignore[override]  # each family's fit takes its own hyper-parameters
        cls,
        data: UserItems,
        *,
        l2: float = 200.0,
        max_items: int = 3000,
        neighbours: int = 200,
        binary: bool = True,
    ) -> Self:
        from threadpoolctl import threadpool_limits

        x = data.matrix.tocsc()
        if binary:
            x = x.copy()
            x.data[:] = 1.0
        counts = np.diff(x.indptr)
        n_items = data.matrix.shape[1]
        kept = np.sort(np.argsort(-counts, kind="stable")[: min(max_items, n_items)])
        xs = x[:, kept].astype(np.float64)
        gram = (xs.T @ xs).toarray()
        gram[np.diag_indices_from(gram)] += l2
        del xs
        with threadpool_limits(None, "blas"):  # the inversion is all BLAS: use every core
            p = spd_inverse(gram)
        del gram
        b = p / (-np.diag(p))[None, :]
        del p
        np.fill_diagonal(b, 0.0)
        pruned = prune_rows(b.astype(np.float32), neighbours)
        del b
        # Back to the full item space: rows and columns of items EASE did not fit stay empty.
        full = csr_matrix(
            (pruned.data, (kept[pruned.tocoo().row], kept[pruned.indices])),
            shape=(n_items, n_items),
        )
        return cls(
            data.user_ids,
            data.item_ids,
            full,
            data.matrix,
            params={"l2": l2, "max_items": len(kept), "neighbours": neighbours,
                    "binary": binary},
        )  # fmt: skip

    def _drop_unreached(self, scores: np.ndarray, row: csr_matrix) -> None:
        # EASE weights may be negative; only items nothing points at are not recommendations.
        reached = np.zeros(len(scores), dtype=bool)
        reached[self.similarity[row.indices].indices] = True
        scores[~reached] = np.nan
