"""SASRec's training cost per epoch (issue 19): the full softmax against the sampled one, on
the validation cut ``streamrec train`` fits first, each variant in this process one after the
other (same run, same load).

    python bench/sasrec_cost.py --dataset structured-1M --steps 40 --epochs 3
    python bench/sasrec_cost.py --dataset ml-100k --epochs 20 --ndcg   # quality too

An epoch is at most ``max_windows`` windows (STREAMREC_TRAIN_SASREC_MAX_WINDOWS): ``--steps``
bounds the steps measured an epoch and the table projects the whole epoch from the median
step (epoch 1, which compiles, is left out of the median). ``--ndcg`` scores the fitted
model on the validation users, as the trainer's selection does (meaningful with whole
epochs: ``--steps 0``). Datasets are bench/training.py's (prepared there once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench._ml_splits import cpu_s, load_splits  # noqa: E402
from core.config import Settings  # noqa: E402
from training.train import TrainConfig  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="structured-1M", help="a bench/training.py dataset")
    ap.add_argument("--workdir", type=Path, default=REPO / "data" / "bench")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40, help="steps an epoch measured (0: all)")
    ap.add_argument(
        "--negatives", default="0,1000", help="sampled-softmax negatives per variant (0: full)"
    )
    ap.add_argument("--ndcg", action="store_true", help="validation NDCG@10 of each fit")
    ap.add_argument("--max-windows", type=int, help="windows an epoch (default: the setting)")
    args = ap.parse_args()
    from training.evaluate import make_holdout, ranking_metrics
    from training.sasrec import fit_sasrec, windows
    from training.select import only_users, split_users

    console = Console(width=160)
    storage = (args.workdir / args.dataset / "storage").resolve()
    if not storage.exists():
        raise SystemExit(f"no snapshots at {storage}: run bench/training.py on it first")
    catalog = "movielens" if args.dataset == "ml-100k" else "none"
    s = load_splits(storage, catalog)
    settings = Settings()
    base = TrainConfig.from_settings(settings.train, settings.cache_path)
    inner = s.inner
    n_items = len(inner.item_ids)
    load = os.getloadavg()[0]
    table = Table(
        title=f"SASRec on {args.dataset}'s validation cut: {len(inner):,} interactions, "
        f"{n_items:,} items (load {load:.1f} at start)"
    )
    for col in ("softmax", "batch", "windows", "an epoch", "steps measured", "CPU ms/step",
                "wall ms/step", "epoch CPU s (projected)", "fit wall s", "fit CPU s",
                "NDCG@10 (validation)", "load"):  # fmt: skip
        table.add_column(col, justify="right")
    for negatives in (int(x) for x in args.negatives.split(",")):
        cfg = replace(
            base.sasrec(), epochs=args.epochs, max_steps=args.steps, negatives=negatives,
            full_softmax_items=0 if negatives else n_items,
        )  # fmt: skip
        if args.max_windows:
            cfg = replace(cfg, max_windows=args.max_windows)
        from training.sasrec import MAX_LOGITS, sequences

        indptr, items = sequences(inner)
        n_windows = len(windows(indptr, items, cfg.max_len))
        width = negatives + 1 if cfg.sampled(n_items) else n_items + 1
        batch = max(8, min(cfg.batch, MAX_LOGITS // (cfg.max_len * width)))
        per_epoch = min(n_windows, cfg.max_windows)
        steps_epoch = -(-per_epoch // batch)
        marks: list = []  # (wall, CPU) seconds of each epoch
        t0, c0 = time.perf_counter(), cpu_s()
        last = [t0, c0]

        def on_epoch(
            _e: int, _l: float, _m: object, last: list = last, marks: list = marks
        ) -> None:
            now, cpu = time.perf_counter(), cpu_s()
            marks.append((now - last[0], cpu - last[1]))
            last[:] = [now, cpu]

        model = fit_sasrec(inner, cfg, on_epoch=on_epoch)
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        steps = min(args.steps, steps_epoch) if args.steps else steps_epoch
        later = marks[1:] or marks  # epoch 1 compiles
        cpu_step = statistics.median(c for _, c in later) / steps
        wall_step = statistics.median(w for w, _ in later) / steps
        ndcg = "-"
        if args.ndcg:
            _, eval_users = split_users(s.valid, base, settings.train.eval_max_users)
            hold = make_holdout(inner, only_users(s.valid, eval_users), seed=base.seed)
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1, "blas"):
                ndcg = f"{ranking_metrics(model, hold)['ndcg@10']:.4f}"
        table.add_row(
            f"sampled {negatives}" if cfg.sampled(n_items) else f"full {n_items}",
            str(batch), f"{n_windows:,}", f"{per_epoch:,}", str(steps),
            f"{cpu_step * 1000:.0f}", f"{wall_step * 1000:.0f}",
            f"{cpu_step * steps_epoch:.0f}", f"{wall:.1f}", f"{cpu:.1f}", ndcg,
            f"{os.getloadavg()[0]:.1f}",
        )  # fmt: skip
        console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
