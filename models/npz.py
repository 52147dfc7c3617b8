"""Numpy ``.npz`` artifacts that never execute code when read: object arrays are refused on
write (strings are stored as fixed-width unicode) and ``allow_pickle=False`` on read."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from models.errors import ArtifactError


def to_npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    clean: dict[str, Any] = {}  # ** into savez_compressed: its keyword types are Any
    for name, arr in arrays.items():
        a = np.asarray(arr)
        if a.dtype == object:
            # Ids arrive as Python strings; fixed-width unicode needs no pickle to store.
            a = a.astype(str) if a.size else np.zeros(0, dtype="<U1")
        clean[name] = a
    np.savez_compressed(buf, **clean)
    return buf.getvalue()


def from_npz(
    data: bytes, *, kind: str, artifact: str, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError) as err:
        raise ArtifactError(
            f"{artifact} is not a readable npz file: {err}", kind=kind, artifact=artifact
        ) from err
    missing = [r for r in required if r not in arrays]
    if missing:
        raise ArtifactError(f"{artifact} lacks arrays {missing}", kind=kind, artifact=artifact)
    return arrays


def csr_arrays(prefix: str, m: csr_matrix) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_data": m.data.astype(np.float32),
        f"{prefix}_indices": m.indices.astype(np.int32),
        f"{prefix}_indptr": m.indptr.astype(np.int64),
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_from(prefix: str, arrays: Mapping[str, np.ndarray]) -> csr_matrix:
    shape = tuple(int(x) for x in arrays[f"{prefix}_shape"])
    return csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=shape,
    )
