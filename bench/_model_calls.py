"""CPU time of one model call as serving makes it (``recommend_unseen`` for k=10 with the
user's 20 newest held-out items as the fresh Redis history), ALS+LightGBM and SASRec trained
on MovieLens-100K's train split, in one process on one BLAS thread, alternating twice (the
second pair is the one to read). CPU time, not wall time: the shared cores' load inflates the
latter. SASRec trains 1 epoch here: its call costs the same whatever the weights.

    .venv/bin/python bench/_model_calls.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fitted(s) -> tuple[Any, Any, list[str], dict[str, list[str]]]:
    """ALS+LightGBM trained on MovieLens-100K's train split, that split, 500 users and, for
    each, the 20 newest held-out items (newest first, as Redis gives them)."""
    from ingest.movielens import load_movielens
    from schemas.split import temporal_test_mask
    from training.catalog import ItemCatalog
    from training.data import build_interactions
    from training.train import TrainConfig, fit_two_stage, generator_for

    ml = load_movielens(s.cache_path)
    data = build_interactions(ml.interactions())
    held = temporal_test_mask(data.users, data.ts)
    train, test = data.subset(~held), data.subset(held)
    catalog = ItemCatalog.align(ml.catalog, data.item_ids, "movielens")
    cfg = TrainConfig()
    gen, pop = generator_for(train, catalog, cfg)
    two, _ = fit_two_stage(gen, test, gen, pop, cfg)
    users = [str(u) for u in data.user_ids[:500]]
    hist = {}
    for n, u in enumerate(users):
        rows = test.items[test.users == n][::-1][:20]
        hist[u] = [str(data.item_ids[i]) for i in rows]
    return two, train, users, hist


def main() -> None:
    import numpy as np
    from threadpoolctl import threadpool_limits

    from core.config import Settings
    from training.sasrec import SASRecConfig, fit_sasrec

    s = Settings()
    two, train, users, hist = fitted(s)
    seq = fit_sasrec(train, SASRecConfig(epochs=1, cache_dir=str(s.cache_path / "jax")))
    with threadpool_limits(1):
        for label, model in (("als+lgbm", two), ("sasrec", seq)) * 2:
            for u in users[:20]:
                model.recommend_unseen(u, 10, history=hist[u])
            times = []
            for u in users:
                t = time.process_time()
                model.recommend_unseen(u, 10, history=hist[u])
                times.append(time.process_time() - t)
            med, p99 = np.median(times) * 1e3, np.percentile(times, 99) * 1e3
            load = os.getloadavg()[0]
            print(f"{label:9} median {med:.2f} ms, p99 {p99:.2f} ms CPU a call (load {load:.1f})")


if __name__ == "__main__":
    main()
