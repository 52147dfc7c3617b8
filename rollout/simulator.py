"""Closed-loop simulator: users of the MovieLens-100K test split ask the live API for
recommendations and watch a recommended item, more likely when it is one of their held-out
future interactions, producing watch events to Kafka that the stream processor joins with
the logged responses (online evaluation).

Bounded in count and time, loopback-only (it is a load generator: it must not be pointed
at someone else's service by accident).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from core.config import KafkaSettings, SimulateSettings
from core.kafka import EventProducer
from rollout.errors import SimulatorError
from schemas.events import WatchEvent, make_event_id

log = logging.getLogger(__name__)

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def future_interactions(users: np.ndarray, items: np.ndarray) -> dict[str, frozenset[str]]:
    """User -> the items of their held-out future (the test split's rows)."""
    out: dict[str, set[str]] = {}
    for u, i in zip(users.tolist(), items.tolist(), strict=True):
        out.setdefault(str(u), set()).add(str(i))
    return {u: frozenset(s) for u, s in out.items()}


def choose_watch(
    items: Sequence[str],
    future: frozenset[str],
    rng: random.Random,
    *,
    watch_prob: float,
    noise_prob: float,
) -> str | None:
    """The item a simulated user watches after seeing ``items`` (None: nothing). The best
    ranked item of their future is watched with ``watch_prob``; otherwise (or when none is
    recommended) a random recommended item with ``noise_prob``."""
    if not items:
        return None
    hits = [i for i in items if i in future]
    if hits and rng.random() < watch_prob:
        return hits[0]
    if rng.random() < noise_prob:
        return rng.choice(list(items))
    return None


def check_loopback(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK:
        raise SimulatorError(
            f"--api must be an http URL on this machine (127.0.0.1, localhost, ::1), got {url!r}"
        )
    return url.rstrip("/")


def parse_rate(text: str) -> float:
    """``"50/s"`` or ``"50"`` -> 50.0 requests per second."""
    raw = text.strip().removesuffix("/s")
    try:
        rate = float(raw)
    except ValueError:
        raise SimulatorError(f"--rate must look like 50/s, got {text!r}") from None
    if not 0 < rate <= 10_000:
        raise SimulatorError(f"--rate must be within (0, 10000]/s, got {text!r}")
    return rate


@dataclass
class VariantCounts:
    requests: int = 0
    watches: int = 0

    @property
    def conversion(self) -> float:
        return self.watches / self.requests if self.requests else 0.0


@dataclass
class SimStats:
    sent: int = 0
    ok: int = 0
    non_200: int = 0
    transport_errors: int = 0
    watches: int = 0
    dropped_events: int = 0
    started: float = field(default_factory=time.monotonic)
    by_variant: dict[str, VariantCounts] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return self.non_200 + self.transport_errors

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _error(self, text: str) -> None:
        if len(self.first_errors) < 5:
            self.first_errors.append(text)


class Simulator:
    def __init__(
        self,
        kafka: KafkaSettings,
        simulate: SimulateSettings,
        api_url: str,
        future: Mapping[str, frozenset[str]],
        *,
        rate: float,
        k: int = 10,
        seed: int = 0,
        concurrency: int = 32,
        producer: EventProducer | None = None,
    ) -> None:
        if not future:
            raise SimulatorError("no simulated users: the test split is empty")
        self.api_url = check_loopback(api_url)
        self.future = dict(future)
        self.users = sorted(self.future)
        self.rate, self.k, self.concurrency = rate, k, concurrency
        self.rng = random.Random(seed)
        self.watch_prob = simulate.watch_prob
        self.noise_prob = simulate.noise_prob
        self.producer = producer or EventProducer(kafka)
        self.stats = SimStats()

    async def _one(self, client: httpx.AsyncClient, user: str) -> None:
        st = self.stats
        try:
            resp = await client.get(f"{self.api_url}/recommend/{user}", params={"k": self.k})
        except httpx.HTTPError as err:
            st.transport_errors += 1
            st._error(f"{type(err).__name__}: {err}")
            return
        st.statuses[resp.status_code] = st.statuses.get(resp.status_code, 0) + 1
        if resp.status_code != 200:
            st.non_200 += 1
            st._error(f"HTTP {resp.status_code}: {resp.text[:200]}")
            return
        st.ok += 1
        body = resp.json()
        label = (
            f"{body['variant']} v{body['model_version']}" if body["model_version"] else "fallback"
        )
        counts = st.by_variant.setdefault(label, VariantCounts())
        counts.requests += 1
        item = choose_watch(
            body["items"],
            self.future.get(user, frozenset()),
            self.rng,
            watch_prob=self.watch_prob,
            noise_prob=self.noise_prob,
        )
        if item is None:
            return
        event = WatchEvent(
            event_id=make_event_id("simulate", body["request_id"], item),
            user_id=user,
            item_id=item,
            ts=datetime.now(UTC),
        )
        if self.producer.try_send(event):
            counts.watches += 1
            st.watches += 1
        else:
            st.dropped_events += 1

    async def run(
        self,
        *,
        duration_s: float | None = None,
        max_requests: int | None = None,
        stop: threading.Event | None = None,
        on_tick: Callable[[SimStats], None] | None = None,
        tick_s: float = 1.0,
    ) -> SimStats:
        """Send requests at ``rate`` until ``duration_s``, ``max_requests`` or ``stop``
        (at least one bound is required), then wait for the answers and flush the events."""
        if duration_s is None and max_requests is None and stop is None:
            raise SimulatorError("give the simulator a bound: a duration or a request count")
        self.stats = st = SimStats()
        limits = httpx.Limits(max_connections=self.concurrency)
        inflight: set[asyncio.Task] = set()
        gate = asyncio.Semaphore(self.concurrency)
        next_tick = time.monotonic() + tick_s

        async def guarded(user: str) -> None:
            try:
                await self._one(client, user)
            finally:
                gate.release()

        async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:
            while True:
                now = time.monotonic()
                if (
                    (duration_s is not None and st.elapsed >= duration_s)
                    or (max_requests is not None and st.sent >= max_requests)
                    or (stop is not None and stop.is_set())
                ):
                    break
                due = st.started + st.sent / self.rate
                if due > now:
                    await asyncio.sleep(min(due - now, 0.05))
                    continue
                await gate.acquire()
                user = self.rng.choice(self.users)
                task = asyncio.create_task(guarded(user))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                st.sent += 1
                self.producer.poll(0)
                if on_tick is not None and now >= next_tick:
                    next_tick = now + tick_s
                    on_tick(st)
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
        await asyncio.to_thread(self.producer.flush, 30)
        if on_tick is not None:
            on_tick(st)
        return st


def simulate_in_thread(sim: Simulator, **kwargs: Any) -> tuple[threading.Thread, list]:
    """Run ``sim`` on a thread of its own (tests, the demo); the list gets its SimStats."""
    result: list = []

    def main() -> None:
        result.append(asyncio.run(sim.run(**kwargs)))

    thread = threading.Thread(target=main, name="simulator", daemon=True)
    thread.start()
    return thread, result
