"""``streamrec train``: train, evaluate, gate and publish a model version."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from core.config import Settings
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from training.pipeline import TrainReport


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser("train", help=help_text, description=help_text)
    p.add_argument("--since", help="first event day (YYYY-MM-DD or ISO time, UTC)")
    p.add_argument("--until", help="last event day, inclusive (YYYY-MM-DD or ISO time)")
    p.add_argument("--force", action="store_true", help="publish even if the gate says no")
    p.add_argument("--promote", action="store_true", help="make the new version production")
    p.add_argument("--name", help="registry model name (default STREAMREC_MODEL_NAME)")
    p.add_argument(
        "--catalog",
        choices=("auto", "topic", "movielens", "none"),
        help="item catalog source (default STREAMREC_TRAIN_CATALOG)",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="search hyper-parameters on a validation split of train; publish nothing",
    )
    p.set_defaults(func=run)


class _Stages:
    """One progress bar per stage; a stage is finished when the next one starts."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.current: TaskID | None = None

    def __call__(self, name: str, total: int | None) -> Callable[[int], None]:
        self.finish()
        self.current = self.progress.add_task(name, total=total)
        task = self.current
        return lambda n: self.progress.update(task, completed=n)

    def finish(self) -> None:
        if self.current is not None:
            task = self.progress.tasks[self.current]
            self.progress.update(self.current, total=task.total or 1, completed=task.total or 1)


def _time_range(args: argparse.Namespace):
    from training.data import TimeRange, parse_day_or_time

    since = parse_day_or_time(args.since) if args.since else None
    until = parse_day_or_time(args.until, end=True) if args.until else None
    return TimeRange(since, until)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from training.pipeline import run_training

    if args.name is not None and not args.name.strip():
        raise ConfigError("--name must not be empty")
    console = Console()
    time_range = _time_range(args)
    if args.tune:
        return _tune(settings, time_range, console)
    progress = Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    stages = _Stages(progress)
    with progress:
        report = run_training(
            settings,
            time_range=time_range,
            force=args.force,
            promote=args.promote,
            name=args.name,
            catalog_source=args.catalog,
            progress=stages,
        )
        stages.finish()

    console.print(metrics_table(report))
    console.print(lift_line(report))
    td = report.training_data
    console.print(
        f"data: {td.n_events:,} events from {len(td.snapshot_files)} snapshot files, "
        f"{td.n_interactions:,} interactions, {td.n_users:,} users, {td.n_items:,} items; "
        f"catalog: {report.facts['catalog']}"
    )
    if report.decision.reason.startswith("refused:"):
        console.print(f"[red]{report.decision.reason}[/red]")
    else:
        verdict = "[green]passed[/green]" if report.decision.passed else "[yellow]failed[/yellow]"
        console.print(f"quality gate {verdict}: {report.decision.reason}")
    total = sum(report.timings.values())
    if report.manifest:
        promoted = " and promoted to production" if args.promote else " as a candidate"
        console.print(
            f"published {report.manifest.name} version {report.manifest.version}{promoted} "
            f"in {total:.1f} s"
        )
        return 0
    console.print(f"nothing published (use --force to override) after {total:.1f} s")
    return 3


def metrics_table(report: TrainReport) -> Table:
    """Every family's validation NDCG@10 (what selection used) and holdout metrics; the
    winner in bold (the demo prints it too)."""
    table = Table(
        title=f"Holdout metrics ({report.facts['holdout_users']} users, last 20% each); "
        f"selection on {report.facts.get('validation_users', 0)} validation users"
    )
    for col in ("model", "valid NDCG@10", "NDCG@10", "Recall@10", "HitRate@10", "Coverage@10"):
        table.add_column(col, justify="left" if col == "model" else "right")
    validation = report.selection.validation if report.selection else {}
    for label, m in report.metrics.items():
        style = "bold" if label == report.winner else None
        v = validation.get(label, {}).get("ndcg@10")
        table.add_row(
            label + (" (selected)" if label == report.winner else ""),
            "-" if v is None else f"{v:.4f}",
            *(f"{m[k]:.4f}" for k in ("ndcg@10", "recall@10", "hitrate@10", "coverage@10")),
            style=style,
        )
    return table


def lift_line(report: TrainReport) -> str:
    best, _ = report.best_baseline
    return (
        f"{report.winner} (best on validation) vs best other baseline ({best}): holdout "
        f"NDCG@10 {report.lift_over_best_baseline:+.1%}"
    )


def _tune(settings: Settings, time_range, console: Console) -> int:
    from core.storage import open_store
    from schemas.split import temporal_test_mask
    from training.data import build_interactions, read_events
    from training.train import TrainConfig
    from training.tune import tune

    store = open_store(settings.storage)
    with console.status("reading snapshots"):
        events, files = read_events(store, time_range)
        data = build_interactions(events, files)
    train = data.subset(~temporal_test_mask(data.users, data.ts))
    table = Table(title="Validation NDCG@10 (fit: train minus each user's last 20%)")
    for col in ("model", "params", "NDCG@10"):
        table.add_column(col)
    with console.status("searching") as status:

        def on_trial(model: str, params: dict, ndcg: float) -> None:
            status.update(f"{model} {params}: {ndcg:.4f}")
            table.add_row(model, ", ".join(f"{k}={v}" for k, v in params.items()), f"{ndcg:.4f}")

        best, _ = tune(
            train, TrainConfig.from_settings(settings.train, settings.cache_path), on_trial=on_trial
        )
    console.print(table)
    console.print("best settings (set them as STREAMREC_TRAIN_* variables):")
    for key in ("als_factors", "als_regularization", "als_alpha", "knn_neighbours",
                "knn_similarity", "pop_half_life_days"):  # fmt: skip
        console.print(f"  STREAMREC_TRAIN_{key.upper()}={getattr(best, key)}")
    return 0
