"""streamrec's own long-running processes as stack services, so that ``stack up --service
stream,api`` starts them detached (as the demo does) and ``stack down`` stops them with the
rest. Each runs ``python -m streamrec <subcommand>`` with the caller's settings in its
environment."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from streamrec.stack.base import Service


def _http_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class _AppService(Service):
    subcommand: str

    def ensure_installed(self) -> None:
        """Nothing to install: the process is this very package."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "streamrec", self.subcommand]

    def environment(self) -> dict[str, str]:
        # The child builds Settings from its environment: pass ours down explicitly so a
        # demo run with a custom prefix/port starts its processes with the same values.
        return {**os.environ, **self.settings.environment()}


class StreamWorkerService(_AppService):
    name = "stream"
    marker = "streamrec stream"
    subcommand = "stream"

    @property
    def port(self) -> int:
        return self.settings.stream.metrics_port

    def probe(self, timeout: float = 2.0) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.port}/metrics", timeout)


class ApiService(_AppService):
    name = "api"
    marker = "streamrec serve"
    subcommand = "serve"

    @property
    def port(self) -> int:
        return self.settings.serve.port

    def probe(self, timeout: float = 2.0) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.port}/healthz", timeout)
