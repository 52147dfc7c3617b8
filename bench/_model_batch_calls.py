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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--against", type=Path, help="a tree whose rows_dot is the baseline")
    args = ap.parse_args()
    import numpy as np
    from threadpoolctl import threadpool_limits

    import models.signals as sig
    from bench._model_calls import fitted
    from core.config import Settings
    from models.base import ModelCall

    model, _, users, hist = fitted(Settings())
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


if __name__ == "__main__":
    main()
