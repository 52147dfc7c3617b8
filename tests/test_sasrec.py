"""The sequential model (models/sasrec.py, trained by training/sasrec.py): the numpy
inference serving runs equals the JAX forward pass the trainer optimises; on structured
synthetic data (sessions that follow item chains) it beats popularity; it round-trips the
registry as an npz without pickle. Tiny models: the module runs in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from core.config import Settings
from core.storage import open_store
from models import ModelRegistry
from models.kinds import model_class
from models.sasrec import SASRecModel
from models.sasrec import forward as numpy_forward
from schemas.manifest import TrainingData
from schemas.split import temporal_test_mask
from training.data import Interactions, build_interactions
from training.evaluate import make_holdout, ranking_metrics
from training.sasrec import SASRecConfig, fit_sasrec, init_params, use_compile_cache, windows
from training.sasrec import forward as jax_forward
from training.synthetic import structured_events
from training.train import TrainConfig, fit_popularity

# The compilation cache every run of the trainer shares: compiled once per machine.
TINY = SASRecConfig(
    max_len=12, dim=16, blocks=1, heads=2, epochs=20, batch=64, lr=3e-3,
    cache_dir=str(Settings().cache_path / "jax"),
)  # fmt: skip


def _interactions(n_events: int) -> Interactions:
    # Long sessions walking item chains (5 topics of ~30 items): the order carries the signal.
    ev = structured_events(
        n_events, n_users=120, n_items=150, topics=5, session_mean=10, seq_prob=0.9, seed=5
    )
    n = len(ev)
    table = pa.table({
        "event_id": pa.array([f"e{i}" for i in range(n)]),
        "user_id": pa.array(ev.users.astype(str)),
        "item_id": pa.array(ev.items.astype(str)),
        "ts": pa.array(np.asarray(ev.ts, dtype=np.int64) * 1_000_000, pa.int64()),
        "rating": pa.array(np.full(n, np.nan, np.float32)),
    })  # fmt: skip
    return build_interactions(table)


@pytest.fixture(scope="module")
def split() -> tuple[Interactions, Interactions]:
    data = _interactions(6_000)
    test = temporal_test_mask(data.users, data.ts)
    return data.subset(~test), data.subset(test)


@pytest.fixture(scope="module")
def fitted(split: tuple[Interactions, Interactions]) -> SASRecModel:
    return fit_sasrec(split[0], TINY)


def test_numpy_inference_equals_the_jax_forward_pass() -> None:
    import jax
    import jax.numpy as jnp

    p = init_params(10, SASRecConfig(max_len=6, dim=8, blocks=2, heads=2))
    rng = np.random.default_rng(0)
    p = {k: v + 0.1 * rng.standard_normal(v.shape).astype(np.float32) for k, v in p.items()}
    seqs = np.array([[0, 0, 3, 5, 1, 9], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 7]])
    use_compile_cache(TINY.cache_dir)
    run = jax.jit(lambda w, s: jax_forward(w, s, 2, 2))  # one compilation, not one per op
    hidden = np.asarray(run({k: jnp.asarray(v) for k, v in p.items()}, jnp.asarray(seqs)))
    for row, h in zip(seqs, hidden, strict=True):
        np.testing.assert_allclose(numpy_forward(p, row[row > 0], 2, 2), h[-1], atol=1e-5)


def test_windows_cover_every_target_once() -> None:
    indptr, items = np.array([0, 5, 6, 8]), np.array([0, 1, 2, 3, 4, 7, 5, 6])
    w = windows(indptr, items, max_len=3)
    assert w.tolist() == [[2, 3, 4, 5], [0, 0, 1, 2], [0, 0, 6, 7]]  # user 1: one item, none


def test_beats_popularity_on_sequential_data(
    split: tuple[Interactions, Interactions], fitted: SASRecModel
) -> None:
    train, test = split
    holdout = make_holdout(train, test, seed=0)
    pop = fit_popularity(train, TrainConfig())
    seq, base = ranking_metrics(fitted, holdout), ranking_metrics(pop, holdout)
    assert seq["ndcg@10"] > 1.5 * base["ndcg@10"], (seq, base)


def test_fresh_history_is_the_newest_part_of_the_sequence(fitted: SASRecModel) -> None:
    user = str(fitted.user_ids[0])
    trained = fitted.seen_items(user)
    fresh = ["no-such-item", trained[0], str(fitted.item_ids[-1])]  # newest first
    seq = fitted.item_ids[fitted.sequence(user, fresh)].tolist()
    assert seq[-2:] == [str(fitted.item_ids[-1]), trained[0]] and len(seq) <= fitted.max_len
    assert seq.count(trained[0]) == 1
    recs = fitted.recommend_unseen(user, 10, history=fresh)
    assert recs and not {i for i, _ in recs} & (set(trained) | set(fresh))
    assert fitted.recommend("stranger", 5) == []
    assert fitted.recommend("stranger", 5, history=[trained[0]])  # unseen user, fresh items


def test_registry_round_trip_as_npz(tmp_path: Path, fitted: SASRecModel) -> None:
    reg = ModelRegistry(open_store(f"file://{tmp_path}"), "seq")
    card = reg.publish(fitted, training_data=TrainingData(), params={}, metrics={})
    assert card.kind == "sasrec" and model_class("sasrec") is SASRecModel
    assert [(f, a.format) for f, a in card.artifacts.items()] == [("sasrec.npz", "npz")]
    loaded = reg.load(card.version)
    user = str(fitted.user_ids[3])
    assert loaded.recommend_unseen(user, 10) == fitted.recommend_unseen(user, 10)


def test_sampled_softmax_over_every_item_is_the_full_softmax() -> None:
    import jax
    import jax.numpy as jnp
    import optax

    from training.sasrec import sampled_ce

    rng = np.random.default_rng(1)
    emb = rng.standard_normal((9, 4)).astype(np.float32)  # row 0: padding
    h = rng.standard_normal((2, 3, 4)).astype(np.float32)
    targets = np.array([[1, 5, 8], [2, 2, 7]])

    def both(h: jax.Array, emb: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
        logits = (h @ emb.T).at[..., 0].set(-1e9)
        full = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        # Every item a negative at a uniform q (a constant log q cancels): the same loss.
        return full, sampled_ce(h, emb, targets, jnp.arange(1, 9), jnp.full(9, -2.0))

    use_compile_cache(TINY.cache_dir)
    full, sampled = jax.jit(both)(h, emb, targets)  # one compilation, not one per op
    np.testing.assert_allclose(np.asarray(sampled), np.asarray(full), rtol=1e-5, atol=1e-5)


def test_a_big_catalogue_trains_on_sampled_negatives_in_bounded_epochs(
    split: tuple[Interactions, Interactions],
) -> None:
    train = split[0]
    cfg = SASRecConfig(**{**TINY.__dict__, "full_softmax_items": 100, "negatives": 40,
                          "max_windows": 64, "epochs": 2})  # fmt: skip
    assert cfg.sampled(len(train.item_ids)) and not TINY.sampled(len(train.item_ids))
    losses: list[float] = []
    model = fit_sasrec(train, cfg, on_epoch=lambda _e, loss, _m: losses.append(loss))
    assert model.extra_params["negatives"] == 40 and model.extra_params["max_windows"] == 64
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert all(np.isfinite(w).all() for w in model.w.values())
