"""SASRec (Kang & McAuley 2018): causal self-attention over a user's last ``max_len`` items,
the next item scored against the shared item embeddings. Trained with JAX
(:mod:`training.sasrec`); inference here is plain numpy, so serving never imports JAX.

The user's sequence is their training items in event-time order followed by the fresh
``history`` serving reads from Redis (newest first there, so it is reversed here); an item
seen again moves to its newest position. Nothing is folded in: the fresh order *is* the input.

Layers (pre-LayerNorm, as in most current SASRec reproductions): ``x = E[s] + P``; per block
``x += Attn(LN(x))`` (causal, padding keys masked) and ``x += FFN(LN(x))``; the user vector
is ``LN(x[-1])`` and an item's score is its embedding's dot product with it. Column ``c`` of
the catalogue is embedding row ``c + 1``: row 0 is padding.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np

from models.base import Recommender, excluded_columns, index_of, top_k
from models.errors import ArtifactError
from models.npz import from_npz, to_npz

ARTIFACT = "sasrec.npz"
BLOCK_WEIGHTS = (
    "ln1_g", "ln1_b", "wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo",
    "ln2_g", "ln2_b", "w1", "b1", "w2", "b2",
)  # fmt: skip
TOP_WEIGHTS = ("item_emb", "pos_emb", "lnf_g", "lnf_b")
_IDS = ("user_ids", "item_ids", "seq_indptr", "seq_items")
EPS = 1e-6


def weight_names(blocks: int) -> list[str]:
    return [*TOP_WEIGHTS, *(f"b{b}_{w}" for b in range(blocks) for w in BLOCK_WEIGHTS)]


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return np.asarray((x - mu) / np.sqrt(var + np.float32(EPS)) * g + b)


def forward(w: Mapping[str, np.ndarray], seq: np.ndarray, blocks: int, heads: int) -> np.ndarray:
    """The user vector of one sequence of embedding rows (oldest first, no padding, at most
    ``max_len``): :func:`training.sasrec.forward` on one unpadded row, last position only."""
    n = len(seq)
    x = w["item_emb"][seq] + w["pos_emb"][-n:]
    d = x.shape[1]
    dh = d // heads
    causal = np.tril(np.ones((n, n), dtype=bool))
    for b in range(blocks):
        p = f"b{b}_"
        last = b == blocks - 1  # the last block only needs the newest position's output
        h = layer_norm(x, w[p + "ln1_g"], w[p + "ln1_b"])
        q = (h[-1:] if last else h) @ w[p + "wq"] + w[p + "bq"]
        k = (h @ w[p + "wk"] + w[p + "bk"]).reshape(n, heads, dh).transpose(1, 0, 2)
        v = (h @ w[p + "wv"] + w[p + "bv"]).reshape(n, heads, dh).transpose(1, 0, 2)
        q = q.reshape(-1, heads, dh).transpose(1, 0, 2)
        att = q @ k.transpose(0, 2, 1) * np.float32(1.0 / np.sqrt(dh))  # float32 throughout
        att = np.where(causal[-1:] if last else causal, att, np.float32(-1e9))
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        out = (att @ v).transpose(1, 0, 2).reshape(-1, d)
        x = (x[-1:] if last else x) + out @ w[p + "wo"] + w[p + "bo"]
        h = layer_norm(x, w[p + "ln2_g"], w[p + "ln2_b"])
        x = x + np.maximum(h @ w[p + "w1"] + w[p + "b1"], 0.0) @ w[p + "w2"] + w[p + "b2"]
    return layer_norm(x[-1], w["lnf_g"], w["lnf_b"])


class SASRecModel(Recommender):
    kind: ClassVar[str] = "sasrec"

    def __init__(
        self,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        seq_indptr: np.ndarray,
        seq_items: np.ndarray,
        weights: Mapping[str, np.ndarray],
        *,
        blocks: int,
        heads: int,
        extra_params: dict[str, Any] | None = None,
    ) -> None:
        """``seq_items[seq_indptr[u]:seq_indptr[u + 1]]`` are user ``u``'s training item
        columns, oldest first; ``weights`` as named by :func:`weight_names`."""
        missing = [n for n in weight_names(blocks) if n not in weights]
        if missing:
            raise ValueError(f"weights lack {missing}")
        self.w = {n: np.ascontiguousarray(weights[n], dtype=np.float32) for n in weights}
        if self.w["item_emb"].shape[0] != len(item_ids) + 1:
            raise ValueError("item_emb rows do not match the item ids (+1 padding row)")
        if len(seq_indptr) != len(user_ids) + 1 or seq_indptr[-1] != len(seq_items):
            raise ValueError("seq_indptr does not match the user ids and seq_items")
        d = self.w["item_emb"].shape[1]
        if heads < 1 or d % heads:
            raise ValueError(f"{heads} heads do not divide the embedding size {d}")
        self.user_ids = np.asarray(user_ids, dtype=object)
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.user_index = index_of(self.user_ids)
        self.item_index = index_of(self.item_ids)
        self.seq_indptr = np.asarray(seq_indptr, dtype=np.int64)
        self.seq_items = np.asarray(seq_items, dtype=np.int32)
        self.blocks, self.heads = int(blocks), int(heads)
        self.extra_params = dict(extra_params or {})
        self._items_t = np.ascontiguousarray(self.w["item_emb"][1:].T)  # scoring reads it

    @property
    def max_len(self) -> int:
        return int(self.w["pos_emb"].shape[0])

    # -- the contract --------------------------------------------------------------------
    def known_user(self, user_id: str) -> bool:
        # An id with no training items (the cuts share one id map) has no sequence to go on.
        u = self.user_index.get(user_id)
        return u is not None and self.seq_indptr[u + 1] > self.seq_indptr[u]

    def knows_item(self, item_id: str) -> bool:
        return item_id in self.item_index

    def _seen(self, u: int | None) -> np.ndarray:
        if u is None:
            return np.zeros(0, dtype=np.int32)
        return self.seq_items[self.seq_indptr[u] : self.seq_indptr[u + 1]]

    def seen_items(self, user_id: str) -> list[str]:
        seen: list[str] = self.item_ids[self._seen(self.user_index.get(user_id))].tolist()
        return seen

    def sequence(self, user_id: str, history: Sequence[str] = ()) -> np.ndarray:
        """The user's item columns, oldest first, newest ``max_len`` only: training items,
        then the known fresh ``history`` items (given newest first), each item once at its
        newest position."""
        n = self.max_len
        fresh: list[int] = []
        seen: set[int] = set()
        for item in history:  # newest first: the first occurrence is the newest
            j = self.item_index.get(item)
            if j is not None and j not in seen:
                seen.add(j)
                fresh.append(j)
                if len(fresh) == n:
                    break
        fresh.reverse()
        old = self._seen(self.user_index.get(user_id))[-n:]
        if seen:
            old = old[~np.isin(old, np.fromiter(seen, np.int32, len(seen)))]
        keep = max(n - len(fresh), 0)
        old = old[max(len(old) - keep, 0) :] if keep else old[:0]
        return np.concatenate([old.astype(np.int64), np.asarray(fresh, dtype=np.int64)])

    def user_vector(self, user_id: str, history: Sequence[str] = ()) -> np.ndarray | None:
        seq = self.sequence(user_id, history)
        if seq.size == 0:
            return None
        return forward(self.w, seq + 1, self.blocks, self.heads)

    def scores(self, vector: np.ndarray) -> np.ndarray:
        return vector @ self._items_t

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
        # history_weights: the order carries the signal here, not confidences; ignored.
        vec = self.user_vector(user_id, history)
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
        seen = self._seen(self.user_index.get(user_id)).astype(np.int64)
        banned = np.concatenate([excluded_columns(self.item_index, exclude, history), seen])
        return top_k(self.scores(vec), k, self.item_ids, banned)

    # -- artifacts -------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"blocks": self.blocks, "heads": self.heads, **self.extra_params}

    def to_artifacts(self) -> dict[str, tuple[bytes, str]]:
        arrays = {
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            "seq_indptr": self.seq_indptr,
            "seq_items": self.seq_items,
            **{f"w_{n}": a for n, a in self.w.items()},
        }
        return {ARTIFACT: (to_npz(arrays), "npz")}

    @classmethod
    def from_artifacts(cls, files: Mapping[str, bytes], params: dict[str, Any]) -> Self:
        if ARTIFACT not in files:
            raise ArtifactError(f"missing {ARTIFACT}", kind=cls.kind, artifact=ARTIFACT)
        try:
            blocks, heads = int(params["blocks"]), int(params["heads"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(
                "model params lack integer 'blocks' and 'heads'", kind=cls.kind, artifact=ARTIFACT
            ) from None
        required = (*_IDS, *(f"w_{n}" for n in weight_names(blocks)))
        a = from_npz(files[ARTIFACT], kind=cls.kind, artifact=ARTIFACT, required=required)
        weights = {n[2:]: arr for n, arr in a.items() if n.startswith("w_")}
        try:
            return cls(
                a["user_ids"].astype(object),
                a["item_ids"].astype(object),
                a["seq_indptr"],
                a["seq_items"],
                weights,
                blocks=blocks,
                heads=heads,
                extra_params={k: v for k, v in params.items() if k not in ("blocks", "heads")},
            )
        except ValueError as err:
            raise ArtifactError(
                f"{ARTIFACT} is inconsistent: {err}", kind=cls.kind, artifact=ARTIFACT
            ) from err
