"""``streamrec rollout start|resume|status|abort``: the canary rollout controller."""

from __future__ import annotations

import argparse
import logging

from rich.console import Console
from rich.table import Table

from core.config import Settings

log = logging.getLogger(__name__)

EXIT_ROLLED_BACK = 3  # a rollout that ends in a rollback is an outcome, not a crash


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser("rollout", help=help_text, description=help_text)
    p.add_argument("--api", help="API whose /metrics are read (default STREAMREC_ROLLOUT_API_URL)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = sub.add_parser("start", help="roll a version out step by step (or resume it)")
    start.add_argument("model", help="registry model name, e.g. reco")
    start.add_argument("version", type=int)
    start.add_argument("--steps", help="canary weights, e.g. 5,50,100 (STREAMREC_ROLLOUT_STEPS)")
    start.add_argument("--min-samples", type=int, help="recommendations per variant per step")
    start.add_argument("--alpha", type=float, help="significance of the conversion test")
    start.add_argument("--settle-s", type=float, help="wait after min-samples (late conversions)")
    start.add_argument("--no-wait", action="store_true", help="set the first step and exit")
    resume = sub.add_parser("resume", help="run the controller for the rollout in the registry")
    resume.add_argument("model")
    status = sub.add_parser("status", help="where the rollout stands, with this step's numbers")
    status.add_argument("model")
    abort = sub.add_parser("abort", help="stop the rollout: canary cleared (weight 0)")
    abort.add_argument("model")
    abort.add_argument("--reason", default="aborted by operator")
    p.set_defaults(func=run)


def _controller(args: argparse.Namespace, settings: Settings):  # type: ignore[no-untyped-def]
    from models.registry import ModelRegistry
    from rollout import LiveMetricsSource, RolloutController

    registry = ModelRegistry.from_settings(settings, args.model)
    source = LiveMetricsSource.from_settings(settings, args.api)
    return RolloutController(registry, source, settings)


def run(args: argparse.Namespace, settings: Settings) -> int:
    console = Console()
    ctl = _controller(args, settings)
    if args.action == "abort":
        out = ctl.abort(args.reason)
        console.print(f"{ctl.model}: {out.message}")
        return 0
    if args.action == "status":
        out = ctl.status()
        console.print(f"{ctl.model}: {out.kind}: {out.message}")
        if out.stats is not None:
            console.print(_numbers(out))
        return 0
    if args.action == "start":
        state = ctl.start(
            args.version,
            steps=args.steps,
            min_samples=args.min_samples,
            alpha=args.alpha,
            settle_s=args.settle_s,
        )
        plan = state.plan
        console.print(
            f"{ctl.model}: rollout {plan.rollout_id} of v{plan.version}: steps "
            f"{', '.join(f'{s:g}%' for s in plan.steps)}, min {plan.thresholds.min_samples} "
            f"samples per variant, alpha {plan.thresholds.alpha:g}; now at {state.weight:g}%"
        )
        if args.no_wait:
            return 0
    return _run_loop(ctl, settings, console)


def _run_loop(ctl, settings: Settings, console: Console) -> int:  # type: ignore[no-untyped-def]
    from prometheus_client import start_http_server

    from rollout.metrics import ControllerMetrics

    metrics = ControllerMetrics()
    try:
        start_http_server(settings.rollout_metrics_port, "127.0.0.1", registry=metrics.registry)
    except OSError as err:  # a second controller on the host: run, just without /metrics
        log.warning("no /metrics on :%d: %s", settings.rollout_metrics_port, err)
    last = [""]

    def show(out) -> None:  # type: ignore[no-untyped-def]
        metrics.observe(ctl.model, out)
        if out.message != last[0]:
            last[0] = out.message
            console.print(f"  [{out.kind}] {out.message}")

    with console.status("rollout running (Ctrl-C stops the controller, not the rollout)"):
        out = ctl.run(on_outcome=show)
    console.print(_numbers(out) if out.verdict else "")
    console.print(f"{ctl.model}: {out.kind}: {out.message}")
    return EXIT_ROLLED_BACK if out.kind == "rolled_back" else 0


def _numbers(out) -> Table:  # type: ignore[no-untyped-def]
    table = Table(title="this step" if out.verdict is None else "the deciding step")
    for col in ("variant", "served", "converted", "conversion", "requests", "errors", "p99 ms"):
        table.add_column(col, justify="right")
    ev = out.verdict.evidence if out.verdict else None
    for variant in ("production", "canary"):
        if ev:
            a = ev[variant]
        else:
            arm = out.stats.arm(variant)
            a = arm.as_dict()
        p99 = a["p99_ms"]
        table.add_row(
            variant,
            str(a["served"]),
            str(a["converted"]),
            f"{a['conversion_rate']:.2%}",
            f"{a['requests']:.0f}",
            f"{a['errors']:.0f}",
            "-" if p99 is None else f"{p99:.1f}",
        )
    if ev:
        t = ev["test"]
        table.caption = f"one-sided z={t['z']}, p={t['p_value']:.3g}, alpha={t['alpha']:g}"
    return table
