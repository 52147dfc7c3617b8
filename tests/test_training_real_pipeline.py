"""The trainer on data that went through the real pipeline: MovieLens-100K's train split
replayed into Kafka, consumed by the stream processor into Parquet snapshots, then
``streamrec train`` (catalog from the compacted topic), publishing, tampering and two
trainers racing to publish. The snapshot store it writes is also checked as a data lake
(:func:`tests.support.lake.check_lake`: file count, time pruning, the README's DuckDB query)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import Settings
from ingest.movielens import load_movielens
from ingest.replay import replay_movielens
from models import IntegrityError, ModelRegistry
from tests.support.lake import check_lake
from training.pipeline import CANDIDATE, run_training

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent


def test_replayed_movielens_trains_publishes_and_races(topics: Settings) -> None:
    from streams import run_worker

    s = topics.with_sections(train={"threads": 2})  # default flush cadence: issue 20
    ml = load_movielens(s.cache_path)
    train_split = ml.subset("train")
    stats = replay_movielens(s.kafka, train_split)
    assert stats.events == 2 * len(train_split)  # a watch and a rate per rating
    summary = run_worker(s, until_caught_up=True, metrics_port=-1, handle_signals=False)
    assert summary.processed == stats.events and summary.files_written > 0
    check_lake(s.storage.location, summary.files_written)

    report = run_training(s, catalog_source="topic")
    m = report.metrics
    assert report.facts["catalog"] == "topic" and report.facts["catalog_coverage"] > 0.9
    assert m[CANDIDATE]["ndcg@10"] > m["popularity"]["ndcg@10"]
    assert m[CANDIDATE]["ndcg@10"] > m["als"]["ndcg@10"]
    card = report.manifest
    assert card is not None and card.version == 1
    td = card.training_data
    assert td.n_events == stats.events and td.n_interactions == len(train_split)
    assert td.n_users == len(set(train_split.users.tolist()))
    assert td.snapshot_files and all(f.startswith("events/event_type=") for f in td.snapshot_files)
    assert set(card.metrics) >= {"popularity", "als", "item-knn", CANDIDATE}
    assert all(len(a.sha256) == 64 and a.bytes > 0 for a in card.artifacts.values())

    registry = ModelRegistry.from_settings(s.storage, s.model_name)
    registry.load(1)
    key = "models/reco/1/als.npz"
    data = bytearray(registry.store.get(key))
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    registry.store.put(key, bytes(data))
    with pytest.raises(IntegrityError, match=r"als\.npz"):
        registry.load(1)

    # Two trainers racing to publish (forced past the gate: same data, no production).
    env = {
        **os.environ,
        "STREAMREC_STORAGE_URL": s.storage.location,
        "STREAMREC_TOPIC_PREFIX": s.kafka.topic_prefix,
        "STREAMREC_TRAIN_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "streamrec", "train", "--force", "--catalog", "topic"]
    procs = [
        subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
        assert b"published reco version" in out
    assert registry.versions() == [1, 2, 3]
    registry.load(2)
    registry.load(3)
    doc = registry.aliases()
    assert doc.revision == len(doc.history) == 3
    assert sorted(h.version for h in doc.history if h.action == "publish") == [1, 2, 3]
