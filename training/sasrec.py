"""Training :class:`models.sasrec.SASRecModel` with JAX and optax (the ``sequential`` extra):
next-item prediction with full-softmax cross-entropy at every position of each window of a
user's event-time-ordered training items (SASRec-CE, the variant reproducibility studies
found strongest). JAX runs on an accelerator when one is installed and on the CPU otherwise.

An epoch's cost is bounded on big data: at most ``max_windows`` windows an epoch (a fresh
random sample each epoch), and above ``full_softmax_items`` items the softmax runs over
``negatives`` items sampled per batch (popularity^0.75, logQ-corrected) instead of the whole
catalogue, so a step costs the same at any catalogue size. MovieLens-100K (1,682 items, ~2,000
windows) is under both bounds: trained exactly as the full-softmax SASRec-CE.

:func:`forward` is the batched, padded twin of :func:`models.sasrec.forward` (the numpy
inference serving runs); a unit test holds them equal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.sasrec import BLOCK_WEIGHTS, EPS, SASRecModel
from training.data import Interactions

log = logging.getLogger(__name__)

# Logits of one batch are batch x max_len x items floats: the batch shrinks on large
# catalogues so they stay within this many (~160 MB of float32, gradients as much again).
MAX_LOGITS = 40_000_000


@dataclass
class SASRecConfig:
    """SASRec-CE with 2 blocks of d=64 and dropout 0.2 as published. The newest 50 items, not
    100: MovieLens-100K users have ~85 training items, so 100 slots are a third padding, and
    an epoch's cost is the slots' (logits over the catalogue at each). Batches of 32 at a
    learning rate of 2e-3: an epoch costs the same as with 128 at 1e-3 but takes 4x the steps
    (MovieLens-100K: NDCG@10 0.216 after 10 epochs, 0.233 after 15 on validation; 128 at
    1e-3 and 100 items: 0.147 after 10, 0.180 after 20 on the holdout, still rising)."""

    max_len: int = 50
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    lr: float = 2e-3
    batch: int = 32
    epochs: int = 30
    # The trainer's values are the STREAMREC_TRAIN_SASREC_* settings (core/config_train.py).
    # Windows drawn per epoch at most (big data: an epoch is then a sample of the windows).
    max_windows: int = 5_000
    # Catalogues above this many items train with a sampled softmax over ``negatives`` items
    # shared by the batch: the full one's logits cost batch x max_len x items a step.
    full_softmax_items: int = 3_000
    negatives: int = 1_000
    seed: int = 42
    # XLA's persistent compilation cache: compiling the training step costs 2-40 s on the
    # shared 2 cores, reading it back ~1 s (keyed by shapes, so per catalogue size).
    cache_dir: str | None = None
    # Steps an epoch at most (0: all): cost probes only (bench/sasrec_cost.py).
    max_steps: int = 0

    def sampled(self, n_items: int) -> bool:
        """Whether a catalogue of ``n_items`` trains with the sampled softmax."""
        return self.negatives > 0 and n_items > max(self.full_softmax_items, self.negatives)


def sequences(data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, item columns): each user's training items, oldest first (rows are sorted by
    user, then time)."""
    counts = np.bincount(data.users, minlength=len(data.user_ids))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, data.items.astype(np.int32)


def windows(indptr: np.ndarray, items: np.ndarray, max_len: int) -> np.ndarray:
    """Training windows of ``max_len + 1`` embedding rows (column + 1; 0 pads on the left):
    each user's sequence cut from its end, consecutive windows sharing one item so every
    item but the user's first is a target exactly once."""
    out = []
    for a, b in zip(indptr[:-1].tolist(), indptr[1:].tolist(), strict=True):
        end = b
        while end - a >= 2:
            start = max(end - (max_len + 1), a)
            row = np.zeros(max_len + 1, dtype=np.int32)
            row[max_len + 1 - (end - start) :] = items[start:end] + 1
            out.append(row)
            end = start + 1
    if not out:
        return np.zeros((0, max_len + 1), dtype=np.int32)
    return np.stack(out)


def init_params(n_items: int, cfg: SASRecConfig) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    d = cfg.dim

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    p = {
        "item_emb": (rng.standard_normal((n_items + 1, d)) / np.sqrt(d)).astype(np.float32),
        "pos_emb": (rng.standard_normal((cfg.max_len, d)) / np.sqrt(d)).astype(np.float32),
        "lnf_g": np.ones(d, np.float32),
        "lnf_b": np.zeros(d, np.float32),
    }
    p["item_emb"][0] = 0.0
    for b in range(cfg.blocks):
        for name in BLOCK_WEIGHTS:
            key = f"b{b}_{name}"
            if name.startswith("ln"):
                p[key] = (np.ones if name.endswith("_g") else np.zeros)(d, np.float32)
            elif name.startswith("w"):
                p[key] = normal(d, d)
            else:
                p[key] = np.zeros(d, np.float32)
    return p


def _layer_norm(jnp: Any, x: Any, g: Any, b: Any) -> Any:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + EPS) * g + b


def forward(
    p: dict, seqs: Any, blocks: int, heads: int, *, dropout: float = 0.0, key: Any = None
) -> Any:
    """Hidden states (batch x max_len x dim) of left-padded ``seqs`` (0 = padding). With
    ``key`` and ``dropout`` > 0 it is the training pass (dropout on)."""
    import jax
    import jax.numpy as jnp

    keys = iter(jax.random.split(key, 4 * blocks + 1)) if key is not None else None

    def drop(x: Any) -> Any:
        if keys is None or dropout <= 0:
            return x
        keep = jax.random.bernoulli(next(keys), 1.0 - dropout, x.shape)
        return jnp.where(keep, x / (1.0 - dropout), 0.0)

    bsz, n = seqs.shape
    x = drop(p["item_emb"][seqs] + p["pos_emb"][None])
    d = x.shape[-1]
    dh = d // heads
    allowed = jnp.tril(jnp.ones((n, n), dtype=bool))[None] & (seqs > 0)[:, None, :]

    def split(t: Any) -> Any:
        return t.reshape(bsz, n, heads, dh).transpose(0, 2, 1, 3)

    for b in range(blocks):
        w = {name: p[f"b{b}_{name}"] for name in BLOCK_WEIGHTS}
        h = _layer_norm(jnp, x, w["ln1_g"], w["ln1_b"])
        q, k, v = (split(h @ w[f"w{c}"] + w[f"b{c}"]) for c in "qkv")
        att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)
        att = jax.nn.softmax(jnp.where(allowed[:, None], att, -1e9), axis=-1)
        out = (drop(att) @ v).transpose(0, 2, 1, 3).reshape(bsz, n, d)
        x = x + drop(out @ w["wo"] + w["bo"])
        h = _layer_norm(jnp, x, w["ln2_g"], w["ln2_b"])
        x = x + drop(drop(jax.nn.relu(h @ w["w1"] + w["b1"])) @ w["w2"] + w["b2"])
    return _layer_norm(jnp, x, p["lnf_g"], p["lnf_b"])


def use_compile_cache(cache_dir: str | None) -> None:
    """Keep XLA's compiled programs in ``cache_dir`` (process-wide; None: leave as is)."""
    if not cache_dir:
        return
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    # jax's Config declares its options when they are registered, at run time.
    if jax.config.jax_compilation_cache_dir == cache_dir:  # type: ignore[attr-defined]
        return
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    # Every program, not only those over a second: on a loaded host small ones take seconds.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # JAX decides at its first compilation whether the cache is on, for good; something may
    # have compiled before this (importing optax does): let it decide again.
    compilation_cache.reset_cache()


def negative_sampler(items: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(cdf over columns, log q by embedding row) of the sampled softmax's negatives: q is
    (count + 1)^0.75 (word2vec's), so popular items -- the full softmax's hardest negatives --
    come up often, and an item absent from this cut still gets pushed down now and then."""
    q = (np.bincount(items, minlength=n_items).astype(np.float64) + 1.0) ** 0.75
    q /= q.sum()
    logq = np.concatenate([[0.0], np.log(q)]).astype(np.float32)
    return np.cumsum(q), logq


def sampled_ce(h: Any, emb: Any, targets: Any, negs: Any, logq: Any) -> Any:
    """Sampled-softmax cross-entropy (batch x max_len) of the target against the batch's shared
    negatives (embedding rows), every logit less log q (Bengio & Senecal's correction, so the
    sample estimates the full softmax); a negative that is the target itself is dropped."""
    import jax
    import jax.numpy as jnp

    pos = (h * emb[targets]).sum(-1) - logq[targets]
    neg = h @ emb[negs].T - logq[negs]
    neg = jnp.where(negs == targets[..., None], -1e9, neg)
    logits = jnp.concatenate([pos[..., None], neg], axis=-1)
    return jax.nn.logsumexp(logits, axis=-1) - pos


def fit_sasrec(
    data: Interactions,
    cfg: SASRecConfig,
    *,
    on_epoch: Callable[[int, float, SASRecModel | None], None] | None = None,
    model_every: int = 0,
) -> SASRecModel:
    """SASRec fitted on ``data``. ``on_epoch(epoch, mean loss, model or None)`` is called
    after each epoch, with the model so far every ``model_every`` epochs (experiments)."""
    import jax
    import jax.numpy as jnp
    import optax

    use_compile_cache(cfg.cache_dir)
    indptr, items = sequences(data)
    n_items = len(data.item_ids)
    all_windows = windows(indptr, items, cfg.max_len)
    sampled = cfg.sampled(n_items)
    width = cfg.negatives + 1 if sampled else n_items + 1  # logits a position
    batch = max(8, min(cfg.batch, MAX_LOGITS // (cfg.max_len * width)))
    params = jax.tree.map(jnp.asarray, init_params(n_items, cfg))
    opt = optax.adam(cfg.lr)
    state = opt.init(params)
    blocks, heads, rate = cfg.blocks, cfg.heads, cfg.dropout
    cdf, logq = negative_sampler(items, n_items)

    def loss_fn(p: dict, seqs: Any, negs: Any, key: Any) -> Any:
        inputs, targets = seqs[:, :-1], seqs[:, 1:]
        h = forward(p, inputs, blocks, heads, dropout=rate, key=key)
        if negs is None:
            logits = (h @ p["item_emb"].T).at[..., 0].set(-1e9)  # padding is never an answer
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        else:
            ce = sampled_ce(h, p["item_emb"], targets, negs, jnp.asarray(logq))
        mask = (targets > 0).astype(ce.dtype)
        return (ce * mask).sum() / jnp.maximum(mask.sum(), 1.0)

    @jax.jit
    def step(p: dict, s: Any, seqs: Any, negs: Any, key: Any) -> tuple[dict, Any, Any]:
        loss, grads = jax.value_and_grad(loss_fn)(p, seqs, negs, key)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    rng = np.random.default_rng(cfg.seed)
    # Negatives draw from their own stream: the full-softmax fit's draws stay as they were.
    neg_rng = np.random.default_rng(cfg.seed + 1)
    key = jax.random.key(cfg.seed)
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        order = rng.permutation(len(all_windows))[: cfg.max_windows]
        if cfg.max_steps:
            order = order[: cfg.max_steps * batch]
        losses = []
        for start in range(0, len(order), batch):
            rows = all_windows[order[start : start + batch]]
            if len(rows) < batch:  # one batch shape: one compilation
                rows = np.concatenate(
                    [rows, np.zeros((batch - len(rows), rows.shape[1]), rows.dtype)]
                )
            negs = None
            if sampled:
                drawn = np.searchsorted(cdf, neg_rng.random(cfg.negatives), side="right")
                negs = jnp.asarray(np.minimum(drawn, n_items - 1).astype(np.int32) + 1)
            key, sub = jax.random.split(key)
            params, state, loss = step(params, state, jnp.asarray(rows), negs, sub)
            losses.append(loss)
        mean = float(np.mean([float(x) for x in losses])) if losses else float("nan")
        if on_epoch is not None:
            snap = model_every and epoch % model_every == 0
            on_epoch(epoch, mean, _model(data, indptr, items, params, cfg) if snap else None)
    log.info(
        "sasrec: %d windows (%d an epoch), %s softmax, batch %d, %d epochs in %.1f s",
        len(all_windows), min(len(all_windows), cfg.max_windows),
        f"sampled ({cfg.negatives} of {n_items})" if sampled else f"full ({n_items})", batch,
        cfg.epochs, time.perf_counter() - t0,
    )  # fmt: skip
    return _model(data, indptr, items, params, cfg)


def _model(
    data: Interactions, indptr: np.ndarray, items: np.ndarray, params: dict, cfg: SASRecConfig
) -> SASRecModel:
    weights = {n: np.asarray(a, dtype=np.float32) for n, a in params.items()}
    extra = {"max_len": cfg.max_len, "dim": cfg.dim, "epochs": cfg.epochs,
             "dropout": cfg.dropout, "lr": cfg.lr, "max_windows": cfg.max_windows,
             "negatives": cfg.negatives if cfg.sampled(len(data.item_ids)) else 0}  # fmt: skip
    return SASRecModel(
        data.user_ids, data.item_ids, indptr, items, weights,
        blocks=cfg.blocks, heads=cfg.heads, extra_params=extra,
    )  # fmt: skip
