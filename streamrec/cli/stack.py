"""``streamrec stack up|down|status``: the local Kafka/Redis/MinIO/Prometheus processes."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from core.config import Settings
from streamrec import stack

_STYLE = {
    "started": "green",
    "running": "green",
    "external": "cyan",
    "stopped": "dim",
    "not ready": "yellow",
    "conflict": "red",
}
_UP_WORDS = {"started": "started", "running": "already running", "external": "reused"}


def register(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    p = subparsers.add_parser("stack", help=help_text, description=help_text)
    actions = p.add_subparsers(dest="stack_action", metavar="ACTION", required=True)
    names = list(stack.SERVICES)

    up = actions.add_parser(
        "up",
        help="start kafka and redis (idempotent; installs them on first use)",
        description="Start the local services that are not running yet. Default: "
        f"{' + '.join(stack.DEFAULT_SERVICES)}; --all adds minio (S3) and prometheus.",
    )
    up.add_argument("--all", action="store_true", help=f"start {', '.join(stack.INFRA_SERVICES)}")
    up.add_argument("--timeout", type=float, help="seconds to wait for each service")
    down = actions.add_parser("down", help="stop the services `stack up` started")
    status = actions.add_parser(
        "status", help="show each service (exit 1 unless the selected ones are up)"
    )
    for sub in (up, down, status):
        sub.add_argument(
            "--service",
            action="append",
            choices=names,
            metavar="NAME",
            help=f"only this service (repeatable): {', '.join(names)}",
        )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    console = Console()
    if args.stack_action == "up":
        names = list(stack.INFRA_SERVICES) if args.all else args.service
        began = time.monotonic()
        states = stack.up(settings, names, timeout=args.timeout)
        for st in states:
            where = f"127.0.0.1:{st.port}"
            pid = f"pid {st.pid}" if st.pid else (st.detail or "")
            console.print(
                f"[{_STYLE[st.state]}]{st.name:<11}{_UP_WORDS[st.state]:<16}[/] {where:<16} {pid}"
            )
        if any(st.name == "kafka" for st in states):
            jmx = settings.kafka_jmx_exporter_port
            console.print(f"[dim]broker metrics: http://127.0.0.1:{jmx}/metrics[/]")
        if any(st.name == "minio" for st in states):
            console.print(
                f"[dim]S3: STREAMREC_S3_ENDPOINT_URL=http://127.0.0.1:{settings.minio_port} "
                f"STREAMREC_STORAGE_URL=s3://{settings.minio_bucket}/<prefix> "
                f"(console http://127.0.0.1:{settings.minio_console_port})[/]"
            )
        console.print(f"[dim]ready in {time.monotonic() - began:.1f} s[/]")
        return 0
    if args.stack_action == "down":
        for st in stack.down(settings, args.service):
            what = f"stopped (pid {st.pid})" if st.pid else st.detail
            console.print(f"[{_STYLE[st.state]}]{st.name:<11}[/] {what}")
        return 0
    states = stack.status(settings, args.service)
    console.print(_table(states))
    wanted = set(args.service or stack.DEFAULT_SERVICES)
    up_states = {"running", "external"}
    return 0 if all(st.state in up_states for st in states if st.name in wanted) else 1


def _table(states: list[stack.ServiceState]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("service", "state", "pid", "port", "log"):
        table.add_column(column)
    for st in states:
        table.add_row(
            st.name,
            f"[{_STYLE.get(st.state, '')}]{st.state}[/]" + (f" ({st.detail})" if st.detail else ""),
            str(st.pid or "-"),
            str(st.port),
            _short(st.log_path) if st.log_path else "-",
        )
    return table


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
