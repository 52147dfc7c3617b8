"""``streamrec stack up|down|status``: the local Kafka/Redis/MinIO/Prometheus processes, or
with ``--topology cluster`` the 3-broker Kafka and 6-node Redis Cluster."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.config import Settings
from schemas.errors import ConfigError
from streamrec import stack
from streamrec.stack import cluster

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
        f"{' + '.join(stack.DEFAULT_SERVICES)}; --all adds minio (S3), alertmanager, "
        "prometheus and perses (dashboards).",
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
            help=f"only this service (repeatable): {', '.join(names)}; on the cluster "
            f"topology: {', '.join(cluster.GROUPS)} (all their nodes)",
        )
        sub.add_argument(
            "--topology",
            choices=("single", "cluster"),
            help="single: one broker + one Redis; cluster: 3 KRaft brokers (ports from "
            "STREAMREC_CLUSTER_KAFKA_BASE_PORT, 19092) + a 6-node Redis Cluster (from "
            "STREAMREC_CLUSTER_REDIS_BASE_PORT, 7001). Default: STREAMREC_STACK_TOPOLOGY "
            "(single)",
        )
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    console = Console()
    if (args.topology or settings.stack.topology) == "cluster":
        return _run_cluster(args, settings, console)
    if args.stack_action == "up":
        names = list(stack.INFRA_SERVICES) if args.all else args.service
        began = time.monotonic()
        states = stack.up(settings, names, timeout=args.timeout, topology="single")
        _print_up(console, states)
        if any(st.name == "kafka" for st in states):
            jmx = settings.kafka.jmx_exporter_port
            console.print(f"[dim]broker metrics: http://127.0.0.1:{jmx}/metrics[/]")
        if any(st.name == "minio" for st in states):
            console.print(
                f"[dim]S3: STREAMREC_S3_ENDPOINT_URL=http://127.0.0.1:{settings.minio.port} "
                f"STREAMREC_STORAGE_URL=s3://{settings.minio.bucket}/<prefix> "
                f"(console http://127.0.0.1:{settings.minio.console_port})[/]"
            )
        if any(st.name == "perses" for st in states):
            console.print(
                f"[dim]Perses: http://127.0.0.1:{settings.observability.perses_port}/api/v1/projects/"
                "streamrec/dashboards (API only: no UI bundle in this build)[/]"
            )
        console.print(f"[dim]ready in {time.monotonic() - began:.1f} s[/]")
        return 0
    if args.stack_action == "down":
        for st in stack.down(settings, args.service, topology="single"):
            what = f"stopped (pid {st.pid})" if st.pid else st.detail
            console.print(f"[{_STYLE[st.state]}]{st.name:<13}[/] {what}")
        return 0
    states = stack.status(settings, args.service, topology="single")
    console.print(_table(states))
    wanted = set(args.service or stack.DEFAULT_SERVICES)
    up_states = {"running", "external"}
    return 0 if all(st.state in up_states for st in states if st.name in wanted) else 1


def _run_cluster(args: argparse.Namespace, settings: Settings, console: Console) -> int:
    if getattr(args, "all", False):
        raise ConfigError("--all starts minio and prometheus of the single topology only")
    if args.stack_action == "up":
        began = time.monotonic()
        _print_up(
            console, stack.up(settings, args.service, timeout=args.timeout, topology="cluster")
        )
        for line in stack.cluster_report(settings, args.service).summaries:
            console.print(escape(line), soft_wrap=True)
        env = " ".join(f"{k}={v}" for k, v in cluster.client_env(settings).items())
        console.print(f"[dim]clients: {escape(env)}[/]", soft_wrap=True)
        console.print(f"[dim]ready in {time.monotonic() - began:.1f} s[/]")
        return 0
    if args.stack_action == "down":
        for st in stack.down(settings, args.service, topology="cluster"):
            what = f"stopped (pid {st.pid})" if st.pid else st.detail
            console.print(f"[{_STYLE[st.state]}]{st.name:<13}[/] {what}")
        return 0
    result = stack.cluster_report(settings, args.service)
    console.print(_table(result.states))
    for line in result.summaries:
        console.print(escape(line), soft_wrap=True)
    for line in result.problems:  # one line each, never wrapped: scripts grep them
        console.print(f"[red]error: {escape(line)}[/]", soft_wrap=True)
    up_states = {"running", "external"}
    healthy = all(st.state in up_states for st in result.states) and not result.problems
    return 0 if healthy else 1


def _print_up(console: Console, states: list[stack.ServiceState]) -> None:
    for st in states:
        where = f"127.0.0.1:{st.port}"
        pid = f"pid {st.pid}" if st.pid else (st.detail or "")
        console.print(
            f"[{_STYLE[st.state]}]{st.name:<13}{_UP_WORDS[st.state]:<16}[/] {where:<16} {pid}"
        )


def _table(states: list[stack.ServiceState]) -> Table:
    table = Table(box=None, pad_edge=False)
    with_roles = any(st.role for st in states)
    for column in ("service", "state", "pid", "port", *(("role",) if with_roles else ()), "log"):
        table.add_column(column)
    for st in states:
        table.add_row(
            st.name,
            f"[{_STYLE.get(st.state, '')}]{st.state}[/]" + (f" ({st.detail})" if st.detail else ""),
            str(st.pid or "-"),
            str(st.port),
            *((escape(st.role or "-"),) if with_roles else ()),
            _short(st.log_path) if st.log_path else "-",
        )
    return table


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
