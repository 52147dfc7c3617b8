"""CPU time of serving's batched model call (``recommend_unseen_batch``, k=10, each user's 20
newest held-out items as the fresh history) per request at batch 1 and 8, ALS+LightGBM
trained on MovieLens-100K's train split, one BLAS thread, interleaved in one process: this
tree's ``models.signals.rows_dot`` against its numpy path (``--against`` a tree: that
tree's ``rows_dot`` instead). Checks the rankings are identical first. CPU time, not wall.

    .venv/bin/python bench/_model_batch_calls.py [--rounds 10] [--against /path/to/tree]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--against", type=Path, help="a tree whose rows_dot is the baseline")
    args = ap.parse_args()
    import numpy as np
    from threadpoolctl import threadpool_limits

    import models.signals as sig
    from models.base import ModelCall

    model, users, hist = _fitted()
    calls = [ModelCall(u, 10, history=hist[u]) for u in users]
    fast = sig.rows_dot
    if args.against:
        spec = importlib.util.spec_from_file_location(
            "base_signals", args.against / "models/signals.py"
        )
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["base_signals"] = mod
        spec.loader.exec_module(mod)
        base = mod.rows_dot
    else:

        def base(m, rows, weights):  # the numpy path: repeat, product, bincount
            saved, sig._csc_matvec = sig._csc_matvec, None
            try:
                return fast(m, rows, weights)
            finally:
                sig._csc_matvec = saved

    impl = {"baseline": base, "this tree": fast}
    got = {}
    for name, f in impl.items():
        sig.rows_dot = f
        got[name] = [model.recommend_unseen_batch(calls[i : i + 8]) for i in range(0, 500, 8)]
    same = got["baseline"] == got["this tree"]
    times: dict[tuple[str, int], list[float]] = {(n, b): [] for n in impl for b in (1, 8)}
    loads = [os.getloadavg()[0]]
    with threadpool_limits(1):
        for rnd in range(args.rounds):
            for name in list(impl)[:: 1 if rnd % 2 == 0 else -1]:
                sig.rows_dot = impl[name]
                for b in (1, 8):
                    for i in range(0, len(calls), b):
                        t = time.process_time()
                        model.recommend_unseen_batch(calls[i : i + b])
                        times[(name, b)].append((time.process_time() - t) / b)
            loads.append(os.getloadavg()[0])
    sig.rows_dot = fast
    print(f"rankings identical: {same}; load average {min(loads):.1f}-{max(loads):.1f}")
    print("| batch | baseline ms CPU / request | this tree | ratio |")
    for b in (1, 8):
        mb, mt = (float(np.median(times[(n, b)])) * 1e3 for n in impl)
        print(f"| {b} | {mb:.3f} | {mt:.3f} | {mt / mb:.2f}x |")


def _fitted() -> tuple[Any, list[str], dict[str, list[str]]]:
    """The model and histories ``bench/_model_calls.py`` uses."""
    from core.config import Settings
    from ingest.movielens import load_movielens
    from schemas.split import temporal_test_mask
    from training.catalog import ItemCatalog
    from training.data import build_interactions
    from training.train import TrainConfig, fit_two_stage, generator_for

    ml = load_movielens(Settings().cache_path)
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
        hist[u] = [str(data.item_ids[i]) for i in rows]  # newest first, as Redis gives them
    return two, users, hist


if __name__ == "__main__":
    main()
