"""What the live alerting test needs besides the processes: a webhook receiver standing in for
PagerDuty or a chat channel (a tiny HTTP server recording what Alertmanager posts), the
Alertmanager command line, and the alert rules with their ``for:`` cut short."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import Settings
from streamrec.stack.alertmanager import render_config
from streamrec.stack.prometheus import write_config


class WebhookReceiver:
    """Records every POST as (path, JSON body); ``url(path)`` is where to point a receiver."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        lock = threading.Lock()
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self) -> list[tuple[str, dict[str, Any]]]:
        """Every alert of every notification so far, with the path it was posted to."""
        return [(path, alert) for path, body in list(self.posts) for alert in body["alerts"]]

    def wait_for(
        self, match: Callable[[str, dict[str, Any]], bool], what: str, timeout: float
    ) -> tuple[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [(path, alert) for path, alert in self.alerts() if match(path, alert)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                seen = [(p, a["labels"].get("alertname"), a["status"]) for p, a in self.alerts()]
                raise AssertionError(f"{what}: not within {timeout:g} s; received {seen}")
            time.sleep(0.5)


def alertmanager_config(source: Path, dest: Path, urls: Mapping[str, str]) -> Path:
    """The repo's routing with ``urls`` as its receivers' webhooks, flushing groups every
    second instead of after 10 s to 5 min (the routing itself is unchanged)."""
    return write_config(render_config(source, urls, group_wait_s=1), dest)


def alertmanager_command(binary: str, config: Path, port: int, storage: Path) -> list[str]:
    return [
        binary,
        f"--config.file={config}",
        f"--storage.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]


def with_short_for(
    config: dict[str, Any], dest: Path, for_s: float, minute_window: str | None = None
) -> dict[str, Any]:
    """``config`` (a rendered prometheus.yml) reading copies of its rule files in ``dest``
    whose ``for:`` is at most ``for_s`` and, with ``minute_window``, whose one-minute rate
    windows (``[1m]``) are that long instead: the expressions, labels and annotations stay the
    repo's, only the waits before firing and resolving are cut (promtool's unit tests check
    the real ones). With 1 s scrapes a 15 s window still holds 15 samples."""
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for pattern in config.get("rule_files", []):
        path = Path(pattern)
        for rules in sorted(path.parent.glob(path.name)):
            text = re.sub(r"(?m)^(\s+for: ).*$", rf"\g<1>{for_s:g}s", rules.read_text())
            if minute_window:
                text = text.replace("[1m]", f"[{minute_window}]")
            assert yaml.safe_load(text), rules
            (dest / rules.name).write_text(text)
            files.append(str(dest / rules.name))
    return {**config, "rule_files": files}


@pytest.fixture(scope="session")
def alertmanager_bins() -> dict[str, str]:
    """Paths of prometheus-alertmanager and amtool, installed from the distribution's package
    when missing (as ``stack up --service alertmanager`` does): never a skip."""
    from streamrec.stack.alertmanager import AlertmanagerService

    AlertmanagerService(Settings()).ensure_installed()
    found = {
        name: shutil.which(name) or f"/usr/bin/{name}"
        for name in ("prometheus-alertmanager", "amtool")
    }
    missing = [name for name, path in found.items() if not Path(path).exists()]
    assert not missing, f"installing prometheus-alertmanager left these missing: {missing}"
    return found


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver
