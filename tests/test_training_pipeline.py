"""``streamrec train`` on MovieLens-100K snapshots written in the stream processor's exact
layout (the real-pipeline variant, through Kafka, is in test_training_real_pipeline.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from core.config import Settings
from core.storage import open_store
from ingest.movielens import load_movielens
from models import IntegrityError, ModelRegistry
from training.pipeline import CANDIDATE, run_training
from training.select import FAMILIES
from training.synthetic import EventArrays, write_snapshots

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ml_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    base = Settings()
    root = tmp_path_factory.mktemp("ml") / "storage"
    ml = load_movielens(base.cache_path)
    write_snapshots(
        open_store(f"file://{root}"), EventArrays(ml.users, ml.items, ml.ts, ml.ratings)
    )
    return base.with_sections(
        storage={"url": f"file://{root}"}, train={"catalog": "movielens", "threads": 2}
    )


def test_train_publish_gate_and_cli(ml_settings: Settings) -> None:
    first = run_training(ml_settings, promote=True)
    m = first.metrics
    assert set(m) == set(FAMILIES) and first.winner == CANDIDATE  # selected on validation
    assert m[CANDIDATE]["ndcg@10"] > m["popularity"]["ndcg@10"]
    assert m[CANDIDATE]["recall@10"] > m["popularity"]["recall@10"]
    assert first.decision.passed and first.decision.reason == "no production version yet"

    card = first.manifest
    assert card is not None and card.version == 1 and card.kind == CANDIDATE
    td = card.training_data
    assert td.n_events == 100_000 and td.n_users == 943 and td.n_items == 1682
    assert len(td.snapshot_files) > 100 and td.event_time_min < td.event_time_max
    assert set(card.artifacts) == {"als.npz", "popularity.json", "features.npz", "ranker.txt",
                                   "transitions.npz", "ranker_knn.npz"}  # fmt: skip
    assert {a.format for a in card.artifacts.values()} == {"npz", "json", "lightgbm-text"}
    assert card.params["als_factors"] == ml_settings.train.als_factors
    assert card.metrics["popularity"]["ndcg@10"] == pytest.approx(m["popularity"]["ndcg@10"])
    assert card.code_version

    registry = ModelRegistry.from_settings(ml_settings.storage, ml_settings.model_name)
    doc = registry.aliases()
    assert doc.production and doc.production.version == 1
    model = registry.load(1)
    recs = model.recommend("1", 10, exclude={"50"})
    assert len(recs) == 10 and "50" not in {i for i, _ in recs}
    # An unseen user with a few fresh items gets personal (not merely popular) results.
    fresh = model.recommend("newcomer", 10, history=["172", "181", "174"])
    assert fresh and not {"172", "181", "174"} & {i for i, _ in fresh}
    assert [i for i, _ in fresh] != [i for i, _ in model.popularity.recommend("x", 10)]
    # Nothing known and no history: the popularity fallback inside the model answers.
    assert model.recommend("nobody", 5) == model.popularity.recommend("nobody", 5)

    # Production (v1) was trained on this very holdout, so the candidate cannot beat it.
    second = run_training(ml_settings)
    assert not second.decision.passed and second.manifest is None
    assert "optimistic" in second.decision.reason and "production v1" in second.decision.reason
    forced = run_training(ml_settings, force=True)
    assert forced.manifest is not None and forced.manifest.version == 2
    assert forced.decision.forced and forced.decision.reason.startswith("forced")
    assert "gate:production-v1" in forced.manifest.metrics

    env = {**os.environ, "STREAMREC_STORAGE_URL": ml_settings.storage.location}
    cli = [sys.executable, "-m", "streamrec", "models"]
    out = subprocess.run([*cli, "list"], env=env, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "production: v1" in out.stdout
    out = subprocess.run([*cli, "promote", "2"], env=env, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([*cli, "show", "2"], env=env, cwd=REPO, capture_output=True, text=True)
    assert orjson.loads(out.stdout)["version"] == 2
    out = subprocess.run([*cli, "rollback"], env=env, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and registry.aliases().production.version == 1
    out = subprocess.run([*cli, "show", "9"], env=env, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "no version 9" in out.stderr

    # A tampered artifact is refused on load.
    key = "models/reco/2/ranker.txt"
    registry.store.put(key, registry.store.get(key).replace(b"tree", b"TREE", 1))
    with pytest.raises(IntegrityError, match="sha256"):
        registry.load(2)


def test_train_cli_reports_missing_snapshots(tmp_path: Path) -> None:
    env = {**os.environ, "STREAMREC_STORAGE_URL": f"file://{tmp_path}"}
    out = subprocess.run(
        [sys.executable, "-m", "streamrec", "train"], env=env, cwd=REPO, capture_output=True,
        text=True,
    )  # fmt: skip
    assert out.returncode == 1
    assert "no event snapshots under" in out.stderr and str(tmp_path) in out.stderr
    assert "Traceback" not in out.stderr
