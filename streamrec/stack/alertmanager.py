"""Alertmanager (Debian 12's ``prometheus-alertmanager``, 0.25.0; docker-compose pins the same
version), opt-in like Prometheus: ``up --all`` or ``up --service alertmanager``.

infra/alertmanager/alertmanager.yml is the routing (severity -> receiver, grouping,
inhibition); :func:`render_config` adds each receiver's webhook from the settings, so the
URLs (secrets, for Slack) live in the environment and not in the repo. Prometheus finds it
at ``alertmanager_port`` (see :func:`streamrec.stack.prometheus.render_config`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError
from streamrec.stack.base import Service, port_open
from streamrec.stack.install import ensure_apt_package
from streamrec.stack.prometheus import _ready, write_config

# Receiver name in infra/alertmanager/alertmanager.yml -> the alertmanager section's field of
# its URL.
RECEIVER_URLS: dict[str, str] = {
    "page": "page_webhook_url",
    "ticket": "ticket_webhook_url",
}

# Used only when the repo's file does not exist (an installed copy without the repo).
_FALLBACK_CONFIG: dict[str, Any] = {
    "route": {
        "receiver": "ticket",
        "group_by": ["alertname", "service"],
        "routes": [{"receiver": "page", "matchers": ['severity="page"']}],
    },
    "receivers": [{"name": "page"}, {"name": "ticket"}],
}


def render_config(
    source: Path | None, urls: Mapping[str, str], *, group_wait_s: float | None = None
) -> dict[str, Any]:
    """The configuration of ``source`` (None: a minimal fallback) with a webhook (resolved
    notifications included) added to each receiver named in ``urls`` whose URL is not empty,
    and, if given, every route's group_wait and group_interval replaced (tests use 1 s)."""
    import yaml  # PyYAML comes with uvicorn[standard]; only `stack up` needs it

    if source is None:
        config: dict[str, Any] = json.loads(json.dumps(_FALLBACK_CONFIG))
    else:
        config = yaml.safe_load(source.read_text())
    for receiver in config.get("receivers", []):
        url = urls.get(receiver["name"], "")
        if url:
            hook = {"url": url, "send_resolved": True}
            receiver["webhook_configs"] = [*receiver.get("webhook_configs", []), hook]
    if group_wait_s is not None:
        routes = [config["route"]]
        while routes:
            route = routes.pop()
            route["group_wait"] = route["group_interval"] = f"{group_wait_s:g}s"
            routes += route.get("routes", [])
    return config


class AlertmanagerService(Service):
    name = "alertmanager"
    # Debian's binary is prometheus-alertmanager, upstream's alertmanager: both match, and
    # Prometheus' own marker ("prometheus --config.file") matches neither.
    marker = "alertmanager --config.file"

    @property
    def port(self) -> int:
        return self.settings.alertmanager.port

    @property
    def source_config(self) -> Path | None:
        repo_config = self.settings.home / "infra" / "alertmanager" / "alertmanager.yml"
        return repo_config if repo_config.exists() else None

    @property
    def config_path(self) -> Path:
        return self.run_dir / "alertmanager.yml"

    def urls(self) -> dict[str, str]:
        urls = {}
        for name, field in RECEIVER_URLS.items():
            url = getattr(self.settings.alertmanager, field).get_secret_value()
            # Alertmanager would refuse the file and exit; say which setting is wrong instead.
            if url and not url.startswith(("http://", "https://")):
                raise ConfigError(
                    f"alertmanager_{field} must be an http(s) URL (value not shown: a secret)"
                )
            urls[name] = url
        return urls

    def ensure_installed(self) -> None:
        self._binary()

    def _binary(self) -> str:
        return ensure_apt_package(
            "alertmanager",
            "prometheus-alertmanager",
            "prometheus-alertmanager",
            elsewhere="brew install alertmanager, or a release from prometheus.io/download",
            packaged_units=("prometheus-alertmanager",),
        )

    def prepare(self) -> None:
        (self.settings.data_path / "alertmanager").mkdir(parents=True, exist_ok=True)
        write_config(render_config(self.source_config, self.urls()), self.config_path)
        self.config_path.chmod(0o600)  # it may hold webhook URLs with tokens in them

    def command(self) -> list[str]:
        return [
            self._binary(),
            f"--config.file={self.config_path}",
            f"--storage.path={self.settings.data_path / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # One instance: no gossip cluster, which would otherwise bind 0.0.0.0:9094.
            "--cluster.listen-address=",
        ]

    def probe(self, timeout: float = 2.0) -> bool:
        if not port_open(self.port):
            return False
        # The status body opens with the (gossip) cluster: tells it apart from any HTTP server.
        return _ready(f"http://127.0.0.1:{self.port}/api/v2/status", b'{"cluster":', timeout)
