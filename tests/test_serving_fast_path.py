"""The serving fast path ranks exactly as the plain computation: ALS fold-in, the top ALS
candidates, their features and LightGBM's own prediction, written out here step by step,
against ``recommend_unseen`` (training row banned by column, history turned into columns
once, trees compiled with lleaves) on a few hundred users with fresh histories."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from core.config import Settings
from core.storage import open_store
from models.base import ModelCall, excluded_columns
from models.errors import ArtifactError
from models.features import FEATURES, LiveItemFeatures, feature_matrix
from models.ranker import Ranker
from models.registry import MODEL_PARAMS, ModelRegistry
from models.sasrec import SASRecModel
from models.signals import SASREC_FEATURES, Signals
from models.two_stage import CandidateGenerator, TwoStageModel
from models.two_stage_batch import batchable
from schemas.manifest import TrainingData
from tests.support.serving import trained
from training.sasrec import SASRecConfig, init_params

K = 20


@pytest.fixture(scope="module")
def model() -> TwoStageModel:
    return trained(str(Settings().cache_path)).model


def plain(model: TwoStageModel, user: str, history: list[str], live: LiveItemFeatures) -> list[str]:
    """The two stages with nothing clever: what the fast path must reproduce."""
    als, gen = model.als, model.generator
    u = als.user_index.get(user)
    fresh = [als.item_index[i] for i in dict.fromkeys(history) if i in als.item_index]
    if u is None and not fresh:
        return [i for i, _ in model.popularity.recommend(user, K, exclude=history)]
    merged: dict[int, float] = {}
    if u is not None and not fresh:
        vec = als.user_factors[u]
        row = als.user_items[u]
        merged = dict(zip(row.indices.tolist(), row.data.tolist(), strict=True))
    else:  # the training row merged with the history in a dict, then the fold-in
        row = als.user_items[u] if u is not None else None
        if row is not None:
            merged = dict(zip(row.indices.tolist(), row.data.tolist(), strict=True))
        for j in fresh:
            merged[j] = max(1.0, merged.get(j, 1.0))
        cols = np.fromiter(merged.keys(), np.int64, len(merged))
        vec = als.fold_in(cols, np.fromiter(merged.values(), np.float32, len(merged)))
    scores = (als.item_factors @ vec).astype(np.float64)
    ban = excluded_columns(als.item_index, history, als.seen_items(user))
    scores[ban] = -np.inf
    n = min(model.n_candidates, int(np.isfinite(scores).sum()))
    cand = np.argpartition(-scores, n - 1)[:n]
    cand = cand[np.lexsort((cand, -scores[cand]))]
    sasrec, seq = gen.signals.sasrec, None
    if sasrec is not None:  # its scores of every item; its best as more candidates
        seq = sasrec.scores(sasrec.user_vector(user, history)).astype(np.float64)
        best = np.argsort(-np.where(np.isfinite(scores), seq, -np.inf), kind="stable")
        more = [j for j in best[: gen.signals.seq_candidates] if np.isfinite(scores[j])]
        cand = np.array(sorted({*cand.tolist(), *more}, key=lambda j: (-scores[j], j)))
    hcols = np.asarray(fresh, dtype=np.int64)
    dense = live.dense(als.item_ids)
    profile = gen.profile(user, hcols)
    x = feature_matrix(
        gen.stats,
        profile,
        cand,
        scores[cand],
        unit_factors=gen.unit_factors,
        overrides=None if dense is None else dense[cand],
    )
    x = with_extras(model, x, cand, profile.recent, merged, seq)
    ranked = model.ranker.booster.predict(x, num_threads=1)
    order = np.lexsort((np.arange(cand.size), -ranked))[:K]
    return [str(als.item_ids[cand[i]]) for i in order]


def with_extras(
    model: TwoStageModel,
    x: np.ndarray,
    cand: np.ndarray,
    recent: np.ndarray,
    row: dict,
    seq: np.ndarray | None = None,
) -> np.ndarray:
    """The version's own feature list, each extra feature computed the plain way: sparse
    rows densified, products written out."""
    sig, n = model.generator.signals, len(cand)
    cols = {name: x[:, i] for i, name in enumerate(FEATURES)}
    if sig.transitions is not None:
        t = sig.transitions[recent].toarray()  # row p: where users went after recent[p]
        cols["next_last"] = t[0, cand] if recent.size else np.full(n, np.nan)
        cols["next_recent"] = t.mean(axis=0)[cand] if recent.size else np.full(n, np.nan)
    if sig.knn is not None:
        vec = np.zeros(sig.knn.shape[0])
        vec[list(row)] = list(row.values())
        knn = (sig.knn.T @ vec)[cand]
        cols["knn_score"] = knn if row else np.full(n, np.nan)
        cols["knn_rank"] = rank_of(knn) if row else np.full(n, np.nan)
    if seq is not None:
        s = seq[cand]
        cols["sasrec_score"], cols["sasrec_gap"] = s, s.max() - s
        cols["sasrec_rank"] = rank_of(s)
    names = model.generator.feature_names
    return np.column_stack([cols[name] for name in names]).astype(np.float32)


def rank_of(x: np.ndarray) -> np.ndarray:
    """How many candidates score higher, plus the equal ones listed before: 0 is the best."""
    earlier = np.tri(len(x), k=-1, dtype=bool)  # [i, j]: j comes before i
    return ((x[None, :] > x[:, None]) | ((x[None, :] == x[:, None]) & earlier)).sum(axis=1)


def test_the_version_serves_the_sequential_features(model: TwoStageModel) -> None:
    """What the test below compares covers the features of issue 19 (the default list)."""
    assert {"next_last", "next_recent", "knn_score", "knn_rank"} <= set(
        model.generator.feature_names
    )


def test_the_fast_path_ranks_exactly_as_lightgbm_and_als(model: TwoStageModel) -> None:
    assert model.ranker.compile() is not False, "lleaves could not compile the ranker"
    rng = np.random.default_rng(7)
    items = model.als.item_ids
    pop = [str(i) for i in items[:400]]
    # Live features for some items, as serving's table would hold them.
    live = LiveItemFeatures(
        {pop[n]: {"pop_all": float(1000 - n), "rating_mean": 3.5} for n in range(0, 400, 3)}
    )
    users = [*model.als.user_ids[:250].tolist(), *(f"new-{n}" for n in range(50))]
    compared = 0
    for n, user in enumerate(users):
        size = int(rng.integers(0, 30)) if n % 5 else 0  # a fifth with no fresh history
        history = [str(i) for i in rng.choice(items, size, replace=False)]
        fast = model.recommend_unseen(user, K, history=history, exclude=history, item_features=live)
        assert [i for i, _ in fast] == plain(model, user, history, live), user
        compared += bool(fast)
    assert compared >= 250


def test_recommend_unseen_is_recommend_without_the_training_items(model: TwoStageModel) -> None:
    user = model.als.user_ids[3]
    seen = set(model.seen_items(user))
    unseen = model.recommend_unseen(user, K, history=["1"], exclude=["2"])
    assert [i for i, _ in unseen] == [
        i for i, _ in model.recommend(user, K, history=["1"], exclude={"2", *seen})
    ]
    als_unseen = model.als.recommend_unseen(user, K, exclude=["2"])
    assert [i for i, _ in als_unseen] == [
        i for i, _ in model.als.recommend(user, K, exclude={"2", *seen})
    ]
    # A model without training rows (the contract's default) excludes what it is told.
    top = [i for i, _ in model.popularity.recommend_unseen(user, 3, exclude=["50"])]
    assert "50" not in top and len(top) == 3


def test_a_version_with_the_old_feature_list_still_loads_and_serves(
    model: TwoStageModel, tmp_path: Path
) -> None:
    """Per-version feature lists: a version whose ranker learnt the features of before issue
    19 (FEATURES, no sequential artifacts; its manifest may not even name them) is served with
    exactly those; a version naming a feature this code does not compute is refused."""
    gen = model.generator
    old_gen = CandidateGenerator(gen.als, gen.stats, gen.user_rating_mean, gen.user_recent)
    rng = np.random.default_rng(0)
    x = rng.random((600, len(FEATURES)))
    old_ranker = Ranker.fit(x, x[:, 0] > 0.8, np.full(6, 100), FEATURES, rounds=5)
    old = TwoStageModel(old_gen, old_ranker, model.popularity, n_candidates=50)
    registry = ModelRegistry(open_store(f"file://{tmp_path}"), "reco")
    card = registry.publish(old, training_data=TrainingData(n_events=1), params={}, metrics={})
    assert card.params[MODEL_PARAMS]["features"] == list(FEATURES)
    assert not {"transitions.npz", "ranker_knn.npz", "sasrec.npz"} & set(card.artifacts)
    user = str(gen.als.user_ids[5])
    want = old.recommend_unseen(user, K, history=["50", "1"])
    loaded = registry.load(card.version)
    assert isinstance(loaded, TwoStageModel) and loaded.generator.feature_names == FEATURES
    assert loaded.recommend_unseen(user, K, history=["50", "1"]) == want
    files = {
        name: registry.store.get(f"models/reco/{card.version}/{name}") for name in card.artifacts
    }
    params = dict(card.params[MODEL_PARAMS])
    del params["features"]  # a manifest written before per-version lists
    assert TwoStageModel.from_artifacts(files, params).recommend_unseen(user, K) == (
        old.recommend_unseen(user, K)
    )
    with pytest.raises(ArtifactError, match="does not compute: \\['next_next'\\]"):
        TwoStageModel.from_artifacts(files, {**params, "features": [*FEATURES, "next_next"]})
    # The new list without its artifact: refused with what is missing, not a KeyError.
    files = {n: data for n, (data, _fmt) in model.to_artifacts().items()}
    del files["transitions.npz"]
    with pytest.raises(ArtifactError, match=r"missing transitions\.npz"):
        TwoStageModel.from_artifacts(files, model.params())


def test_batched_calls_rank_as_single_calls_and_the_plain_computation(
    model: TwoStageModel,
) -> None:
    """serving.batcher hands the model calls of concurrent requests to
    ``recommend_unseen_batch`` (models.two_stage_batch): every answer, scores included, is
    the single call's, in batches mixing known users, new users with a history, users
    nobody knows (popularity) and a k above the candidates; and the top-k is the plain
    computation's. Also for a version of the base feature list alone."""
    rng = np.random.default_rng(11)
    items = model.als.item_ids
    live = LiveItemFeatures({str(items[n]): {"pop_all": float(n)} for n in range(0, 300, 4)})
    users = [*model.als.user_ids[:100].tolist(), *(f"new-{n}" for n in range(20))]
    calls = []
    for n, user in enumerate(users):
        size = int(rng.integers(0, 25)) if n % 4 else 0
        history = [str(i) for i in rng.choice(items, size, replace=False)]
        calls.append(ModelCall(user, K, history, history, live))
    calls.append(ModelCall("nobody", K, (), (), live))
    calls.append(ModelCall(users[1], model.n_candidates + 5, (), (), live))
    gen = model.generator
    base = TwoStageModel(
        CandidateGenerator(gen.als, gen.stats, gen.user_rating_mean, gen.user_recent),
        Ranker.fit(*_random_rank_data(), FEATURES, rounds=5),
        model.popularity,
        n_candidates=60,
    )
    assert batchable(model) and batchable(base)  # ranked together, not one by one
    answers = {}
    for version in (model, base):
        single = [
            version.recommend_unseen(
                c.user_id, c.k, history=c.history, exclude=c.exclude, item_features=live
            )
            for c in calls
        ]
        batched, start = [], 0
        for size in itertools.cycle((1, 7, 16, 33)):
            if start >= len(calls):
                break
            batched += version.recommend_unseen_batch(calls[start : start + size])
            start += size
        assert batched == single
        # Again: the users' training-row kNN sums are kept now (Signals._knn_start).
        assert version.recommend_unseen_batch(calls[:40]) == single[:40]
        answers[version] = batched
    for c, got in zip(calls[:60], answers[model][:60], strict=True):
        assert [i for i, _ in got] == plain(model, c.user_id, list(c.history), live), c.user_id


def _random_rank_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).random((600, len(FEATURES)))
    return x, (x[:, 0] > 0.8).astype(float), np.full(6, 100)


def test_a_version_with_sasrec_features_carries_sasrec_and_ranks_as_the_plain_computation(
    model: TwoStageModel,
) -> None:
    """SASRec's score, rank and gap as ranker features and its top-N as extra candidates:
    the version holds sasrec.npz, and after a round trip through its artifacts every answer
    equals the plain computation's (a small SASRec of random weights: only the plumbing is
    under test here, the forward pass is held equal to JAX's by tests/test_sasrec.py)."""
    gen, als = model.generator, model.als
    cfg = SASRecConfig(max_len=20, dim=16, blocks=1, heads=2, seed=3)
    users = als.user_items
    seq = SASRecModel(
        als.user_ids, als.item_ids, users.indptr, users.indices,
        init_params(len(als.item_ids), cfg), blocks=1, heads=2,
    )  # fmt: skip
    signals = Signals(gen.signals.transitions, gen.signals.knn, seq, seq_candidates=15)
    names = (*gen.feature_names, *SASREC_FEATURES)
    with_seq = TwoStageModel(
        CandidateGenerator(
            als, gen.stats, gen.user_rating_mean, gen.user_recent, signals=signals,
            feature_names=names,
        ),
        Ranker.fit(*_rank_data(len(names)), names, rounds=8),
        model.popularity,
        n_candidates=40,
    )  # fmt: skip
    files = {n: data for n, (data, _fmt) in with_seq.to_artifacts().items()}
    assert "sasrec.npz" in files
    loaded = TwoStageModel.from_artifacts(files, with_seq.params())
    assert loaded.generator.feature_names == names and loaded.generator.signals.seq_candidates
    live = LiveItemFeatures({})
    rng = np.random.default_rng(5)
    for n, user in enumerate([*als.user_ids[:30].tolist(), "new-1", "new-2"]):
        history = [str(i) for i in rng.choice(als.item_ids, n % 9, replace=False)]
        got = loaded.recommend_unseen(user, K, history=history, exclude=history, item_features=live)
        assert [i for i, _ in got] == plain(loaded, user, history, live), user


def _rank_data(width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).random((600, width))
    return x, (x[:, 0] + x[:, -1] > 1.6).astype(float), np.full(6, 100)
