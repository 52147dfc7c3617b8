"""MovieLens-100K's cuts exactly as ``streamrec train`` makes them (all -> train + holdout,
train -> inner + validation), and SASRec fits of the inner and train cuts kept on disk, for
the experiments of bench/sequential_ranker.py (issue 19)."""

from __future__ import annotations

import hashlib
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings
from core.storage import open_store
from schemas.split import temporal_test_mask
from training.catalog import ItemCatalog, load_catalog
from training.data import (
    Interactions,
    TimeRange,
    build_interactions,
    list_snapshots,
    scan_interaction_events,
)
from training.tune import validation_split


@dataclass
class Splits:
    data: Interactions
    train: Interactions
    test: Interactions
    inner: Interactions
    valid: Interactions
    catalog: ItemCatalog


def load_splits(storage: Path, catalog: str = "movielens") -> Splits:
    settings = Settings().with_sections(
        storage={"url": f"file://{storage}"}, train={"catalog": catalog}
    )
    store = open_store(settings.storage)
    listing = list_snapshots(store, TimeRange())
    events, files = scan_interaction_events(store, None, files=listing)
    data = build_interactions(
        events, files, watch_weight=settings.train.watch_weight,
        rate_weight=settings.train.rate_weight,
    )  # fmt: skip
    cat = load_catalog(settings.kafka, settings.cache_path, data.item_ids, catalog)
    mask = temporal_test_mask(data.users, data.ts)
    train, test = data.subset(~mask), data.subset(mask)
    inner, valid = validation_split(train)
    return Splits(data, train, test, inner, valid, cat)


def cpu_s() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def cached_sasrec(data: Interactions, epochs: int, cache: Path, cache_dir: str | None):
    """SASRec fitted on ``data`` for ``epochs``, read back from ``cache`` when an earlier run
    fitted the same cut (keyed by the interactions and the epochs)."""
    from models.sasrec import ARTIFACT, SASRecModel

    key = hashlib.sha256(data.users.tobytes() + data.items.tobytes()).hexdigest()[:12]
    path = cache / f"sasrec-{key}-{epochs}e.npz"
    probe = SASRecModel  # the params a fit stores: blocks/heads of SASRecConfig
    if path.exists():
        return probe.from_artifacts({ARTIFACT: path.read_bytes()}, {"blocks": 2, "heads": 1})
    from training.sasrec import SASRecConfig, fit_sasrec

    t0, c0 = time.perf_counter(), cpu_s()
    model = fit_sasrec(data, SASRecConfig(epochs=epochs, cache_dir=cache_dir))
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.to_artifacts()[ARTIFACT][0])
    (cache / f"{path.stem}.cost").write_text(
        f"wall {time.perf_counter() - t0:.1f} s, cpu {cpu_s() - c0:.1f} s\n"
    )
    return model
