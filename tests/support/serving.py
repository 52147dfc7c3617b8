"""Support for the serving tests (no tests here): a real two-stage model trained on
MovieLens-100K with the ``models`` classes, publishing into a test's registry, a throwaway
redis-server, and an in-process client that runs the app's lifespan."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from core.config import Settings
from core.storage import open_store
from ingest.movielens import MovieLens, load_movielens
from models import ModelRegistry, PopularityModel, Recommender
from models.two_stage import TwoStageModel
from schemas.manifest import TrainingData
from schemas.redis_keys import RedisKeys
from schemas.split import temporal_test_mask
from tests.support.ports import free_port
from training.catalog import ItemCatalog
from training.data import build_interactions
from training.train import TrainConfig, fit_two_stage, generator_for


@dataclass
class Trained:
    model: TwoStageModel
    popularity: PopularityModel
    ml: MovieLens


def train_two_stage(cache_dir: Path) -> Trained:
    """The training package's recipe on MovieLens' temporal split, scaled down for tests:
    ALS on the train split, LambdaRank on its candidates labelled by each user's held-out
    items, served on top of the same ALS (so a user's training items are the train split)."""
    ml = load_movielens(cache_dir)
    data = build_interactions(ml.interactions())
    held_out = temporal_test_mask(data.users, data.ts)
    train, test = data.subset(~held_out), data.subset(held_out)
    catalog = ItemCatalog.align(ml.catalog, data.item_ids, "movielens")
    cfg = TrainConfig(
        als_factors=32,
        als_iterations=10,
        n_candidates=100,
        ranker_rounds=40,
        ranker_max_users=400,
        threads=1,
    )
    generator, pop = generator_for(train, catalog, cfg)
    model, _facts = fit_two_stage(generator, test, generator, pop, cfg)
    return Trained(model, pop, ml)


def publish(settings: Settings, model: Recommender, *, promote: bool = True) -> int:
    registry = ModelRegistry(open_store(settings.storage), settings.model_name)
    manifest = registry.publish(
        model,
        training_data=TrainingData(n_events=100_000),
        params={"source": "serving tests"},
        metrics={},
        notes="serving test",
    )
    if promote:
        registry.promote(manifest.version, reason="test", actor="test")
    return manifest.version


def registry_of(settings: Settings) -> ModelRegistry:
    return ModelRegistry(open_store(settings.storage), settings.model_name)


def write_history(redis_client, settings: Settings, user: str, items: list[str]) -> None:
    """What the stream processor writes for watch events (layout: schemas.redis_keys): in
    the slot of the user's partition; ``items`` oldest first, so the last one is the newest."""
    keys = RedisKeys(settings.redis.key_prefix, settings.kafka.topic_partitions).user_slot(user)
    now = time.time()
    redis_client.zadd(
        keys.user_recent(user), {item: now - (len(items) - n) for n, item in enumerate(items)}
    )


def write_trending(redis_client, settings: Settings, scores: dict[str, float]) -> None:
    redis_client.zadd(
        RedisKeys(settings.redis.key_prefix, settings.kafka.topic_partitions).trending, scores
    )


@contextlib.asynccontextmanager
async def running_client(app) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app in this event loop, with its lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@contextlib.contextmanager
def throwaway_redis(tmp: Path, port: int | None = None) -> Iterator[tuple[subprocess.Popen, int]]:
    """A redis-server of our own (so a test may kill it) on ``port`` (default: a free one),
    no persistence."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


@functools.cache
def trained(cache_dir: str) -> Trained:
    """One trained model per test session (training takes a few seconds)."""
    return train_two_stage(Path(cache_dir))


def serving_settings(settings: Settings, **sections: Mapping[str, Any]) -> Settings:
    """The per-test settings with serving knobs for tests: generous budget (a loaded, busy
    CI machine must not turn a personalised answer into a timeout fallback), fast polls.
    ``sections`` change more, as :meth:`Settings.with_sections` takes them."""
    serve = {
        "budget_ms": 5_000.0,
        "alias_poll_s": 3600.0,
        "max_k": 100,
        "preload": False,  # tests decide when models load
        **sections.pop("serve", {}),
    }
    return settings.with_sections(serve=serve, **sections)


REPO = Path(__file__).resolve().parents[2]


@dataclass
class LiveServer:
    """A ``streamrec serve`` process; its output goes to ``log`` (a pipe could fill up)."""

    url: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def status(self, field: str) -> int:
        """A /proc/<pid>/status figure in bytes (VmRSS, VmHWM: peak RSS)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)


def serve_env(s: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes ``streamrec serve`` use the test's settings."""
    return {
        **os.environ,
        "STREAMREC_TOPIC_PREFIX": s.kafka.topic_prefix,
        "STREAMREC_REDIS_KEY_PREFIX": s.redis.key_prefix,
        "STREAMREC_STORAGE_URL": s.storage.location,
        "STREAMREC_REDIS_URL": s.redis.url,
        "STREAMREC_KAFKA_BOOTSTRAP": s.kafka.bootstrap,
        "STREAMREC_SERVE_BUDGET_MS": str(s.serve.budget_ms),
        **extra,
    }


@contextlib.contextmanager
def live_server(
    s: Settings, log_dir: Path, *, ready: bool = True, **env: str
) -> Iterator[LiveServer]:
    """``streamrec serve`` (one worker) on a free port, waited for until /readyz answers 200
    (``ready``) or /healthz does; stopped with SIGINT as a user would."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "serve", "--port", str(port), "--workers", "1"],
            cwd=REPO,
            env=serve_env(s, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        probe = "/readyz" if ready else "/healthz"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited early: {server.output()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + probe, timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"serve never answered {probe}: {server.output()[-2000:]}")
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def app_context(app):
    return app.state.ctx


def training_items(model: TwoStageModel, user: str) -> set[str]:
    row = model.als.user_index[user]
    return set(model.als.item_ids[model.als.user_items[row].indices].tolist())
