"""The sequential row of the serving benchmark (``bench/serving.py --sasrec``): SASRec trained
with JAX on MovieLens-100K's train split (the split the two-stage model of
``bench/_serving_setup.py`` is fitted on) and published under its own registry name, so a
second server serves it from the same Redis. Latency does not depend on how well it is
trained: a few epochs suffice here."""

from __future__ import annotations

MODEL_NAME = "seqbench"


def publish_sasrec(settings, console, epochs: int) -> str:
    """Train, publish and promote SASRec as :data:`MODEL_NAME`; returns that name."""
    from dataclasses import replace

    from core.storage import open_store
    from ingest.movielens import load_movielens
    from models import ModelRegistry
    from schemas.manifest import TrainingData
    from schemas.split import temporal_test_mask
    from training.data import build_interactions
    from training.sasrec import fit_sasrec
    from training.train import TrainConfig

    ml = load_movielens(settings.cache_path)
    data = build_interactions(ml.interactions())
    train = data.subset(~temporal_test_mask(data.users, data.ts))
    console.print(f"training SASRec on MovieLens-100K (train split, {epochs} epochs)...")
    cfg = replace(
        TrainConfig.from_settings(settings.train, settings.cache_path), sasrec_epochs=epochs
    ).sasrec()
    model = fit_sasrec(train, cfg)
    registry = ModelRegistry(open_store(settings.storage), MODEL_NAME)
    version = registry.publish(
        model, training_data=TrainingData(), params={}, metrics={}, notes="bench"
    ).version
    registry.promote(version, reason="bench", actor="bench")
    return MODEL_NAME
