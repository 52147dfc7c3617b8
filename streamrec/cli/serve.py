"""``streamrec serve``: run the recommendation API under uvicorn."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import tempfile
import time

from pydantic import ValidationError
from rich.console import Console

from core.config import Settings
from core.redis import check_kind
from schemas.errors import ConfigError

# Settings a flag overrides; exported to the environment so every worker process (which
# builds its own Settings from the environment) sees the same values.
_ENV = {
    "host": "STREAMREC_SERVE_HOST",
    "port": "STREAMREC_SERVE_PORT",
    "workers": "STREAMREC_SERVE_WORKERS",
    "budget_ms": "STREAMREC_SERVE_BUDGET_MS",
}


def register(subs: argparse._SubParsersAction, help_text: str) -> None:
    p = subs.add_parser("serve", help=help_text, description=help_text)
    p.add_argument("--host", help="bind address (default: STREAMREC_SERVE_HOST)")
    p.add_argument("--port", type=int, help="port (default: STREAMREC_SERVE_PORT)")
    p.add_argument("--workers", type=int, help="worker processes (STREAMREC_SERVE_WORKERS)")
    p.add_argument("--budget-ms", type=float, help="model time budget (STREAMREC_SERVE_BUDGET_MS)")
    p.add_argument("--access-log", action="store_true", help="log every request (slower)")
    p.set_defaults(func=run)


def _check_port_free(host: str, port: int) -> None:
    """uvicorn reports a taken port with a traceback-ish log and exit 1; say it in one line."""
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def run(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    overrides = {k: getattr(args, k) for k in _ENV if getattr(args, k) is not None}
    try:
        settings = settings.with_sections(serve=overrides)
    except ValidationError as err:
        first = err.errors()[0]
        option = "--" + str(first["loc"][-1]).replace("_", "-")
        raise ConfigError(f"{option}: {first['msg']}") from None
    for key, value in overrides.items():
        os.environ[_ENV[key]] = str(value)
    _check_port_free(settings.serve.host, settings.serve.port)
    # Serving starts while Redis is down (and falls back), so a wrong cluster flag would
    # only show as fallbacks and a 503 /readyz: refuse it now, in one line.
    check_kind(settings.redis.url, cluster=settings.redis.cluster)

    console = Console(stderr=True)
    metrics_dir = None
    if settings.serve.workers > 1:
        # Each worker writes its metrics to files here; /metrics merges them all.
        metrics_dir = tempfile.mkdtemp(prefix="streamrec-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    console.print(
        f"[bold]streamrec serve[/] on http://{settings.serve.host}:{settings.serve.port} "
        f"({settings.serve.workers} worker(s), model {settings.model_name!r}, "
        f"budget {settings.serve.budget_ms:g} ms, storage {settings.storage.url}); docs at /docs"
    )
    started = time.monotonic()
    try:
        uvicorn.run(
            "serving.app:app_from_env",
            factory=True,
            host=settings.serve.host,
            port=settings.serve.port,
            workers=settings.serve.workers,
            loop="uvloop",
            http="httptools",
            access_log=args.access_log,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        console.print(f"streamrec serve: stopped after {time.monotonic() - started:.0f} s")
    return 0
