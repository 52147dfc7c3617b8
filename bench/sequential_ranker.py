"""Sequential signal for the two-stage ranker (issue 19), decided on the validation split:
each variant of the ranker's features is trained and scored exactly as ``streamrec train``
does it (ranker on the inner cut's candidates labelled by half of the validation users,
scored on the other half; the same ranker on top of the train cut, scored on the holdout),
beside the same-run ALS and SASRec baselines.

    python bench/sequential_ranker.py                 # SASRec fitted 20 epochs (cached)
    python bench/sequential_ranker.py --epochs 0      # the variants without SASRec

SASRec fits of the inner and train cuts are kept under ``data/bench/ml-100k/sasrec-cache``
(keyed by the cut and the epochs): each costs minutes of CPU, the variants seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench._ml_splits import cached_sasrec, cpu_s, load_splits  # noqa: E402
from bench.training import prepare  # noqa: E402
from core.config import Settings  # noqa: E402
from models.features import FEATURES  # noqa: E402
from models.signals import KNN_FEATURES, TRANSITION_FEATURES  # noqa: E402
from training.evaluate import make_holdout  # noqa: E402
from training.select import (  # noqa: E402
    SEQUENTIAL,
    TWO_STAGE,
    Cut,
    learn_ranker,
    only_users,
    score_all,
    split_users,
)
from training.train import TrainConfig  # noqa: E402

# name -> (ranker features, SASRec features on, SASRec's top-N as candidates)
VARIANTS: dict[str, tuple[tuple[str, ...], bool, int]] = {
    "base (FEATURES)": (FEATURES, False, 0),
    "+transitions": ((*FEATURES, *TRANSITION_FEATURES), False, 0),
    "+kNN": ((*FEATURES, *KNN_FEATURES), False, 0),
    "+transitions+kNN": ((*FEATURES, *TRANSITION_FEATURES, *KNN_FEATURES), False, 0),
    "+SASRec": (FEATURES, True, 0),
    "+SASRec+transitions+kNN": ((*FEATURES, *TRANSITION_FEATURES, *KNN_FEATURES), True, 0),
    "+SASRec+transitions+kNN, +50 SASRec candidates": (
        (*FEATURES, *TRANSITION_FEATURES, *KNN_FEATURES),
        True,
        50,
    ),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20, help="SASRec epochs (0: no SASRec)")
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--workdir", type=Path, default=REPO / "data" / "bench")
    args = ap.parse_args()
    console = Console(width=160)
    settings = Settings()
    workdir = prepare("ml-100k", args.workdir, None)
    s = load_splits((workdir / "storage").resolve())
    base = TrainConfig.from_settings(settings.train, settings.cache_path)
    base = replace(base, sasrec_epochs=args.epochs)
    max_users = settings.train.eval_max_users
    c_inner, c_train = Cut(s.inner, s.catalog, base), Cut(s.train, s.catalog, base)
    for cut in (c_inner, c_train):  # fitted once, shared by every variant
        for family in ("popularity", "als", "item-knn"):
            cut.model(family)
    if args.epochs > 0:
        cache = workdir / "sasrec-cache"
        jax_cache = str(settings.cache_path / "jax")
        c_inner._models[SEQUENTIAL] = cached_sasrec(s.inner, args.epochs, cache, jax_cache)
        c_train._models[SEQUENTIAL] = cached_sasrec(s.train, args.epochs, cache, jax_cache)
    ranker_users, eval_users = split_users(s.valid, base, max_users)
    v_holdout = make_holdout(s.inner, only_users(s.valid, eval_users), seed=base.seed)
    holdout = make_holdout(s.train, s.test, max_users=max_users, seed=base.seed)
    baselines = ["als", *([SEQUENTIAL] if args.epochs > 0 else [])]
    rows: list[tuple[str, dict, dict, float]] = []
    for family in baselines:
        t0 = cpu_s()
        v = score_all({family: c_inner.model(family)}, v_holdout)[family]
        h = score_all({family: c_train.model(family)}, holdout)[family]
        rows.append((family, v, h, cpu_s() - t0))
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    for name, (names, seq, seq_cands) in VARIANTS.items():
        if (only and name not in only) or (seq and args.epochs <= 0):
            continue
        cfg = replace(base, ranker_features=names, ranker_sasrec=seq, seq_candidates=seq_cands)
        cuts = []
        for cut in (c_inner, c_train):
            fresh = Cut(cut.data, cut.catalog, cfg)
            fresh._models = dict(cut._models)
            cuts.append(fresh)
        t0 = cpu_s()
        ranker, _facts = learn_ranker(cuts[0].generator(), s.valid, ranker_users, cfg)
        v = score_all({TWO_STAGE: cuts[0].model(TWO_STAGE, ranker)}, v_holdout)[TWO_STAGE]
        h = score_all({TWO_STAGE: cuts[1].model(TWO_STAGE, ranker)}, holdout)[TWO_STAGE]
        rows.append((f"als+lgbm {name}", v, h, cpu_s() - t0))
        console.print(f"{name}: {v['ndcg@10']:.4f} / {h['ndcg@10']:.4f}")

    n_items = len(s.data.item_ids)
    sasrec_h = next((h["ndcg@10"] for f, _v, h, _c in rows if f == SEQUENTIAL), None)
    table = Table(
        title=f"MovieLens-100K, one run: NDCG@10 validation / holdout (load "
        f"{os.getloadavg()[0]:.1f}; SASRec {args.epochs} epochs)"
    )
    for col in ("model", "validation", "holdout", "vs SASRec (holdout)", "coverage", "CPU s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for label, v, h, cpu in rows:
        lift = f"{h['ndcg@10'] / sasrec_h - 1:+.1%}" if sasrec_h else "-"
        table.add_row(
            label, f"{v['ndcg@10']:.4f}", f"{h['ndcg@10']:.4f}", lift,
            f"{round(h['coverage@10'] * n_items):,}", f"{cpu:.1f}",
        )  # fmt: skip
    console.print(table)
    console.print(f"finished {time.strftime('%H:%M:%S')}; load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
