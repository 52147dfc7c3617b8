"""``streamrec rollout start|run|resume|status|abort``: canary rollouts.

``start`` writes a requested rollout to the registry (as ``POST /admin/rollouts`` does) and
runs the controller until it ends; ``run`` is the long-running controller that executes
whatever is requested (by the API or the CLI) and resumes an in-flight rollout after a
restart."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from core.config import Settings

if TYPE_CHECKING:
    from rollout import RolloutController
    from rollout.controller import Outcome
    from schemas.rollout import Rollout

log = logging.getLogger(__name__)

EXIT_ROLLED_BACK = 3  # a rollout that ends in a rollback is an outcome, not a crash


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser("rollout", help=help_text, description=help_text)
    p.add_argument("--api", help="API whose /metrics are read (default STREAMREC_ROLLOUT_API_URL)")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = sub.add_parser("start", help="request a rollout and run it to its end")
    start.add_argument("model", help="registry model name, e.g. reco")
    start.add_argument("version", type=int)
    start.add_argument("--steps", help="canary weights, e.g. 5,50,100 (STREAMREC_ROLLOUT_STEPS)")
    start.add_argument("--min-samples", type=int, help="recommendations per variant per step")
    start.add_argument("--alpha", type=float, help="significance of the conversion test")
    start.add_argument("--settle-s", type=float, help="wait after min-samples (late conversions)")
    start.add_argument(
        "--no-wait", action="store_true", help="only request it (a `rollout run` executes it)"
    )
    run_ = sub.add_parser(
        "run", help="the controller: execute requested rollouts as they come, resume after restart"
    )
    run_.add_argument("model")
    resume = sub.add_parser("resume", help="run the controller until the current rollout ends")
    resume.add_argument("model")
    status = sub.add_parser("status", help="where the rollout stands, with this step's numbers")
    status.add_argument("model")
    abort = sub.add_parser("abort", help="stop the rollout: canary cleared (weight 0) now")
    abort.add_argument("model")
    abort.add_argument("--reason", default="aborted by operator")
    p.set_defaults(func=run)


def _controller(args: argparse.Namespace, settings: Settings) -> RolloutController:
    from models.registry import ModelRegistry
    from rollout import LiveMetricsSource, RolloutController

    registry = ModelRegistry.from_settings(settings.storage, args.model)
    source = LiveMetricsSource.from_settings(settings, args.api)
    return RolloutController(registry, source, settings.rollout)


def run(args: argparse.Namespace, settings: Settings) -> int:
    console = Console()
    ctl = _controller(args, settings)
    if args.action == "abort":
        out = ctl.abort(args.reason)
        console.print(f"{ctl.model}: {out.message}")
        return 1 if out.kind == "idle" else 0
    if args.action == "status":
        out = ctl.status()
        console.print(f"{ctl.model}: {out.kind}: {out.message}")
        if out.state is not None:
            console.print(_describe(out.state))
        if out.stats is not None:
            console.print(_numbers(out))
        return 0
    if args.action == "start":
        r = ctl.request(
            args.version,
            steps=args.steps,
            min_samples=args.min_samples,
            alpha=args.alpha,
            settle_s=args.settle_s,
        )
        console.print(f"{ctl.model}: {_describe(r)}")
        if args.no_wait:
            return 0
    return _run_loop(ctl, settings, console, forever=args.action == "run")


def _describe(r: Rollout) -> str:
    steps = ", ".join(f"{s:g}%" for s in r.steps)
    lines = [
        f"rollout {r.rollout_id} of v{r.version}: {r.status}, step {r.step + 1}/"
        f"{len(r.evaluated)} at {r.weight:g}% (steps {steps}, min {r.min_samples} samples "
        f"per variant, alpha {r.alpha:g}); requested by {r.requested_by}"
    ]
    lines += [f"  {d.at:%Y-%m-%d %H:%M:%S} {d.action} ({d.actor}): {d.reason}" for d in r.decisions]
    return "\n".join(lines)


def _run_loop(
    ctl: RolloutController, settings: Settings, console: Console, *, forever: bool
) -> int:
    from prometheus_client import start_http_server

    from rollout.metrics import ControllerMetrics

    metrics = ControllerMetrics()
    try:
        start_http_server(
            settings.rollout.metrics_port, settings.rollout.metrics_host, registry=metrics.registry
        )
    except OSError as err:  # a second controller on the host: run, just without /metrics
        log.warning("no /metrics on :%d: %s", settings.rollout.metrics_port, err)
    last = [""]

    def show(out: Outcome) -> None:
        metrics.observe(ctl.model, out)
        if out.message != last[0]:
            last[0] = out.message
            console.print(f"  [{out.kind}] {out.message}")

    what = "controller running" if forever else "rollout running"
    try:
        with console.status(f"{what} (Ctrl-C stops the controller, not the rollout)"):
            out = ctl.run(on_outcome=show, forever=forever)
    except KeyboardInterrupt:
        console.print(f"{ctl.model}: controller stopped; `streamrec rollout run` resumes")
        return 0
    console.print(_numbers(out) if out.verdict else "")
    console.print(f"{ctl.model}: {out.kind}: {out.message}")
    return EXIT_ROLLED_BACK if out.kind in ("rolled_back", "aborted", "failed") else 0


def _numbers(out: Outcome) -> Table:
    table = Table(title="this step" if out.verdict is None else "the deciding step")
    cols = ("variant", "served", "converted", "conversion", "requests", "failed", "p99 ms")
    for col in cols:
        table.add_column(col, justify="right")
    ev = out.verdict.evidence if out.verdict else None
    for variant in ("production", "canary"):
        if ev:
            a = ev[variant]
        else:
            assert out.stats is not None  # callers pass an outcome with a verdict or stats
            arm = out.stats.arm(variant)
            a = arm.as_dict()
        p99 = a["p99_ms"]
        table.add_row(
            variant,
            str(a["served"]),
            str(a["converted"]),
            f"{a['conversion_rate']:.2%}",
            f"{a['requests']:.0f}",
            f"{a['errors'] + a.get('timeouts', 0) + a.get('degraded', 0):.0f}",
            "-" if p99 is None else f"{p99:.1f}",
        )
    if ev:
        t = ev["test"]
        table.caption = f"one-sided z={t['z']}, p={t['p_value']:.3g}, alpha={t['alpha']:g}"
    return table
