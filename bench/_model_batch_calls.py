"""CPU time of serving's batched model call (``recommend_unseen_batch``, k=10, each user's 20
newest held-out items as the fresh history) per request at batch 1, 2, 4, 8 and 16,
ALS+LightGBM trained on MovieLens-100K's train split, one BLAS thread, interleaved call by
call in one process: this tree's ``models.two_stage_batch`` against one call at a time
(``recommend_unseen`` per request), or ``--against`` a tree: that tree's
``models/two_stage_batch.py`` run over this tree's other modules (so it measures the batch
module's own changes). Checks the answers are identical first. CPU time, not wall.

    .venv/bin/python bench/_model_batch_calls.py [--rounds 6] [--against /path/to/tree]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BATCHES = (1, 2, 4, 8, 16)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--against", type=Path, help="a tree whose batch module is the baseline")
    args = ap.parse_args()
    import numpy as np
    from threadpoolctl import threadpool_limits

    import models.two_stage_batch as this
    from bench._model_calls import fitted
    from core.config import Settings
    from models.base import ModelCall

    model, _, users, hist = fitted(Settings())
    calls = [ModelCall(u, 10, history=hist[u]) for u in users]
    if args.against:
        path = args.against / "models/two_stage_batch.py"
        spec = importlib.util.spec_from_file_location("base_two_stage_batch", path)
        if spec is None or spec.loader is None:
            raise SystemExit(f"no batch module at {path}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["base_two_stage_batch"] = mod
        spec.loader.exec_module(mod)
        base = mod.recommend_unseen_batch
        label = f"{args.against.name}'s batch module"
    else:

        def base(m, batch):  # one call per request
            return [
                m.recommend_unseen(c.user_id, c.k, history=c.history, exclude=c.exclude)
                for c in batch
            ]

        label = "one call at a time"
    impl = {"baseline": base, "this tree": this.recommend_unseen_batch}
    same = all(
        impl["baseline"](model, calls[i : i + b]) == impl["this tree"](model, calls[i : i + b])
        for b in BATCHES
        for i in range(0, len(calls), b)
    )
    times: dict[tuple[str, int], list[float]] = {(n, b): [] for n in impl for b in BATCHES}
    loads = [os.getloadavg()[0]]
    with threadpool_limits(1):
        for _ in range(args.rounds):
            for b in BATCHES:
                for n, i in enumerate(range(0, len(calls), b)):
                    # Alternating call by call: both sides see the same moments of load.
                    for name in list(impl)[:: 1 if n % 2 == 0 else -1]:
                        t = time.process_time()
                        impl[name](model, calls[i : i + b])
                        times[(name, b)].append((time.process_time() - t) / b)
            loads.append(os.getloadavg()[0])
    print(f"answers identical: {same}; load average {min(loads):.1f}-{max(loads):.1f}")
    print(f"| batch | {label}: ms CPU / request | this tree | ratio |")
    print("|---|---|---|---|")
    for b in BATCHES:
        mb, mt = (float(np.median(times[(n, b)])) * 1e3 for n in impl)
        print(f"| {b} | {mb:.3f} | {mt:.3f} | {mt / mb:.2f}x |")


if __name__ == "__main__":
    main()
