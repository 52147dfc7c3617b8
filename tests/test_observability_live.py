"""The observability stack, live: a real Prometheus (the Debian binary, our rendered config and
alert rules) scrapes a real API, a real stream worker, a rollout controller running a canary,
the broker's JMX exporter and a Redis exporter while `streamrec simulate` sends closed-loop
simulated users (requests, then watch events to Kafka). A real Perses (`stack up`'s service on
a private port) lists every dashboard converted from our Grafana JSON with all its panels and
refuses a broken one; every query of every panel, run through its datasource proxy,
must return at least one series, and stopping Redis must drive the fallback alert to pending
or firing, and through a real Alertmanager (the repo's routing) to a webhook receiver as a page;
Redis back, the resolution arrives the same way.

Everything here is private to the test (topic prefix, Redis server, storage, ports,
Prometheus data) except the shared broker, which is only read."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from confluent_kafka import Producer

from core.config import Settings
from ingest.movielens import MovieLens, load_movielens
from ingest.replay import replay_movielens
from models.registry import ModelRegistry
from streamrec.stack.prometheus import render_config, write_config
from tests.support.alerting import (
    WebhookReceiver,
    alertmanager_command,
    alertmanager_config,
    with_short_for,
)
from tests.support.perses import check_dashboards, panel_queries, perses_server, series
from tests.support.ports import free_port
from tests.support.stream_worker import child_env
from training.pipeline import run_training

# perses_home builds Perses on a fresh machine (8-11 min): the 600 s limit is the test's own.
# alone: it waits for every scrape to succeed within Prometheus' scrape timeout, and the
# Kafka JMX exporter's walk missed it for 90 s while the other pytest process loaded the
# broker (fresh-clone run of `make test`).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.alone,
    pytest.mark.usefixtures("perses_home"),
    pytest.mark.timeout(600, func_only=True),
]
REPO = Path(__file__).resolve().parent.parent
RATE_INTERVAL = "10s"  # what $__rate_interval becomes with 1 s scrapes


def _wait(what: str, check: Callable[[], bool], timeout: float, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.5)


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def _process(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _env(s: Settings, **extra: str) -> dict[str, str]:
    return child_env(
        s,
        STREAMREC_DATA_DIR=str(s.data_path),
        STREAMREC_STREAM_FLUSH_INTERVAL_S="2",
        # Generous on a noisy shared host: before the outage, only unknown users fall back.
        STREAMREC_SERVE_BUDGET_MS="3000",
        STREAMREC_SERVE_ALIAS_POLL_S="1",
        **extra,
    )


def _few_users(ml: MovieLens, n: int) -> MovieLens:
    users = np.unique(ml.users)[:n]
    keep = np.isin(ml.users, users)
    return MovieLens(ml.users[keep], ml.items[keep], ml.ratings[keep], ml.ts[keep], ml.catalog)


class Prom:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: object) -> dict:
        resp = httpx.get(f"{self.url}{path}", params=params, timeout=30)
        body = resp.json()
        assert body.get("status") == "success", body
        return body["data"]

    def series(self, expr: str, start: float) -> list:
        return self.get("/api/v1/query_range", query=expr, start=start, end=time.time(), step=1)[
            "result"
        ]

    def targets(self) -> dict[str, str]:
        active = self.get("/api/v1/targets", state="active")["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}

    def alert_state(self, name: str) -> str | None:
        alerts = self.get("/api/v1/alerts")["alerts"]
        states = {a["state"] for a in alerts if a["labels"]["alertname"] == name}
        return "firing" if "firing" in states else next(iter(states), None)


def _bad_requests(url: str, n: int = 5) -> list[int]:
    """A few invalid requests (k=0: 422), as a client with a bug sends: the 4xx panel."""
    with httpx.Client(base_url=url, timeout=10) as client:
        return [client.get("/recommend/someone?k=0").status_code for _ in range(n)]


def _check_page_then_resolution(webhook: WebhookReceiver, stopped: float) -> None:
    """The fallback alert that started after Redis stopped reaches the page receiver with
    what on-call needs, then its resolution does; nothing was routed to the wrong one."""

    def ours(alert: dict) -> bool:
        started = datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00"))
        return (
            alert["labels"]["alertname"] == "StreamrecApiFallbackRatioHigh"
            and started.timestamp() > stopped - 2
        )

    path, page = webhook.wait_for(
        lambda p, a: ours(a) and a["status"] == "firing", "the fallback page", 60
    )
    assert path == "/page"
    assert page["labels"]["severity"] == "page" and page["labels"]["service"] == "streamrec-api"
    assert page["labels"]["job"] == "streamrec-api"
    notes = page["annotations"]
    assert "popularity fallbacks" in notes["summary"] and notes["description"]
    anchor = notes["runbook_url"].removeprefix("README.md#")
    assert anchor == "streamrecapifallbackratiohigh"
    assert f"\n#### {page['labels']['alertname']}\n" in (REPO / "README.md").read_text()
    path, _ = webhook.wait_for(
        lambda p, a: ours(a) and a["status"] == "resolved" and a["startsAt"] == page["startsAt"],
        "the fallback alert's resolution",
        150,
    )
    assert path == "/page"
    for path, alert in webhook.alerts():
        receiver = "/page" if alert["labels"]["severity"] == "page" else "/ticket"
        assert path == receiver, (path, alert["labels"])


def test_prometheus_scrapes_everything_panels_have_data_and_redis_down_alerts(
    topics: Settings,
    tmp_path: Path,
    prometheus_bins: dict[str, str],
    alertmanager_bins: dict[str, str],
    webhook: WebhookReceiver,
) -> None:
    from streams import run_worker

    redis_port, api_port, worker_port, exporter_port, prom_port, rollout_port = (
        free_port() for _ in range(6)
    )
    am_port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
    redis_cmd = [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
    redis_cmd += ["--appendonly", "no", "--dir", str(tmp_path)]
    with _process(redis_cmd, logs / "redis.log") as redis_proc:
        s = topics.model_copy(update={"data_dir": tmp_path / "data"}).with_sections(
            redis={"url": f"redis://127.0.0.1:{redis_port}/0"},
            stream={"flush_interval_s": 2.0},
            train={
                "threads": 1,
                "als_iterations": 5,
                "ranker_rounds": 20,
                "ranker_max_users": 100,
                "eval_max_users": 100,
                "gate_min_users": 10,
            },
        )
        ml = load_movielens(s.cache_path)
        few = _few_users(ml.subset("all"), 120)
        train = few.subset("train")

        # A model trained on snapshots a stream worker wrote, promoted to production, and a
        # second version (the same model, published again) for the rollout controller.
        replay_movielens(s.kafka, train)
        run_worker(s, until_caught_up=True, metrics_port=-1, handle_signals=False)
        report = run_training(s, promote=True, catalog_source="topic")
        assert report.manifest is not None
        registry = ModelRegistry.from_settings(s.storage, s.model_name)
        card = report.manifest
        canary = registry.publish(
            registry.load(card.version),
            training_data=card.training_data,
            params=card.params,
            metrics=card.metrics,
            notes="canary of the observability test",
        ).version

        config = render_config(
            REPO / "infra" / "prometheus" / "prometheus.yml",
            {
                "streamrec-api": api_port,
                "streamrec-stream": worker_port,
                "streamrec-rollout": rollout_port,
                "kafka": s.kafka.jmx_exporter_port,
                "redis": exporter_port,
                "prometheus": prom_port,
            },
            interval_s=1,
            alertmanager_port=am_port,
        )
        # The rules' `for:` cut to 1 s, or the page would come minutes after Redis stops; their
        # 1-minute rate windows to 15 s, or the resolution would come a minute after it is back.
        config = with_short_for(config, tmp_path / "rules", 1, minute_window="15s")
        prom_config = write_config(config, tmp_path / "prometheus.yml")
        am_config = alertmanager_config(
            REPO / "infra" / "alertmanager" / "alertmanager.yml",
            tmp_path / "alertmanager.yml",
            {"page": webhook.url("/page"), "ticket": webhook.url("/ticket")},
        )
        alertmanager = alertmanager_command(
            alertmanager_bins["prometheus-alertmanager"], am_config, am_port, tmp_path / "am"
        )
        env = _env(s)
        py = [sys.executable, "-m", "streamrec"]
        api_url = f"http://127.0.0.1:{api_port}"
        worker_env = _env(s, STREAMREC_STREAM_METRICS_PORT=str(worker_port))
        rollout_env = _env(
            s, STREAMREC_ROLLOUT_METRICS_PORT=str(rollout_port), STREAMREC_ROLLOUT_POLL_S="1"
        )
        # Step 1 at 50% never reaches its sample size here: the canary stays on throughout.
        rollout = [*py, "rollout", "--api", api_url, "start", s.model_name, str(canary)]
        rollout += ["--steps", "50,100", "--min-samples", "1000000"]
        # Bounded by --duration; stopped at the end of the test anyway.
        simulate = [*py, "simulate", "--api", api_url, "--rate", "20/s", "--duration", "900"]
        simulate += ["--concurrency", "4"]
        exporter = [
            prometheus_bins["prometheus-redis-exporter"],
            f"-redis.addr=redis://127.0.0.1:{redis_port}",
            f"-web.listen-address=127.0.0.1:{exporter_port}",
        ]
        prometheus = [
            prometheus_bins["prometheus"],
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ]
        with (
            _process([*py, "stream"], logs / "stream.log", worker_env) as worker,
            _process([*py, "serve", "--port", str(api_port)], logs / "api.log", env) as api,
            _process(exporter, logs / "exporter.log") as _exporter,
            _process(alertmanager, logs / "alertmanager.log") as _alertmanager,
            _process(prometheus, logs / "prometheus.log") as prom_proc,
            perses_server(s, prom_port) as perses,
        ):
            _wait("API ready", lambda: _http_ok(f"{api_url}/readyz"), 120, api)
            _wait(
                "worker metrics", lambda: _http_ok(f"http://127.0.0.1:{worker_port}/"), 60, worker
            )
            prom = Prom(prom_port)
            _wait("prometheus ready", lambda: _http_ok(f"{prom.url}/-/ready"), 60, prom_proc)
            perses.wait_ready(60)
            boards = check_dashboards(perses)
            start = time.time()

            with (
                _process(rollout, logs / "rollout.log", rollout_env) as controller,
                _process(simulate, logs / "simulate.log", env) as simulator,
            ):
                # One message that is not an event (a dead letter) and a few invalid
                # requests (4xx), which the simulator's well-behaved users never send.
                bad = Producer({"bootstrap.servers": s.kafka.bootstrap})
                bad.produce(s.topic("watch"), key=b"u1", value=b"this is not an event")
                bad.flush(30)
                assert _bad_requests(api_url) == [422] * 5

                wanted = {
                    "streamrec-api",
                    "streamrec-stream",
                    "streamrec-rollout",
                    "kafka",
                    "redis",
                    "prometheus",
                }
                targets: dict[str, str] = {}

                def all_up() -> bool:
                    targets.update(prom.targets())
                    return all(targets.get(j) == "up" for j in wanted)

                with contextlib.suppress(AssertionError):
                    _wait("every target scraped", all_up, 90)
                assert all_up(), {j: targets.get(j) for j in wanted if targets.get(j) != "up"}

                queries = panel_queries(boards, RATE_INTERVAL)
                assert len(queries) > 30
                missing: list = []

                def all_have_data() -> bool:
                    missing[:] = [q for q in queries if not series(perses, q[2], start)]
                    return not missing

                with contextlib.suppress(AssertionError):
                    _wait("every panel query has data", all_have_data, 240)
                assert not missing, "panel queries without series (via Perses):\n" + "\n".join(
                    f"{b} / {p}: {e}" for b, p, e in missing
                )
                # The canary really served and converted, as the rollout panels show.
                conversions = prom.series(
                    'sum by (variant) (streamrec_rollout_conversions_total{variant="canary"})',
                    start,
                )
                assert conversions, "no canary conversions"
                weight = prom.series("max(streamrec_rollout_canary_weight_percent)", start)
                assert float(weight[0]["values"][-1][1]) == 50.0
                assert controller.poll() is None and simulator.poll() is None

                # Healthy: only cold-start users fall back, which does not alert. (A canary
                # being loaded may have made a short burst of model_loading fallbacks.)
                _wait(
                    "no fallback alert while healthy",
                    lambda: prom.alert_state("StreamrecApiFallbackRatioHigh") is None,
                    120,
                )

                redis_proc.kill()
                redis_proc.wait(10)
                stopped = time.time()
                states: list[str | None] = []

                def alerting() -> bool:
                    states.append(prom.alert_state("StreamrecApiFallbackRatioHigh"))
                    return states[-1] in {"pending", "firing"}

                _wait("fallback alert pending or firing after Redis stopped", alerting, 90)
                _wait(
                    "fallback alert firing",
                    lambda: prom.alert_state("StreamrecApiFallbackRatioHigh") == "firing",
                    60,
                )
                # Redis back at once: the ratio over the rule's 1 m window falls under 5%
                # about a minute later, whatever the outage's length.
                with _process(redis_cmd, logs / "redis-again.log"):
                    _check_page_then_resolution(webhook, stopped)
                assert simulator.poll() is None, "resolved because the load stopped"
            fallbacks = prom.series(
                'sum by (reason) (streamrec_serving_fallbacks_total{reason="redis_unavailable"})',
                start,
            )
            assert fallbacks, "the alert fired without redis_unavailable fallbacks"
