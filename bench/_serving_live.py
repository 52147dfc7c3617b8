"""Realistic traffic for the serving benchmark (``bench/serving.py --realistic``) and the
memory of the servers' worker processes.

* :func:`zipf_users`: a request sequence whose users are drawn Zipf-like (a few users ask
  often, most rarely), as the load generators' user list (they cycle through it);
* :class:`LiveEvents`: a stream worker (``streamrec stream``, its own process) and a producer
  thread feeding watch events of the same Zipf users for MovieLens items through Kafka at a
  steady rate, so users' Redis histories change between their requests (and the result
  cache misses as it would in production);
* :func:`worker_memory`: RSS and PSS (shared pages split between the processes mapping
  them) of each process of a server's tree;
* :func:`tree_cpu_s`: CPU seconds (user + system) a server's process tree has used, whose
  difference over a run divided by the requests answered is the CPU a request costs: the
  figure a loaded machine does not inflate the way it does wall time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent


def zipf_users(users: list[str], n: int, *, exponent: float = 1.1, seed: int = 7) -> list[str]:
    """``n`` draws of ``users`` with P(rank r) ~ 1 / r**exponent (ranks shuffled)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ranked = rng.permutation(np.asarray(users, dtype=object))
    weights = 1.0 / np.arange(1, len(ranked) + 1) ** exponent
    return ranked[rng.choice(len(ranked), n, p=weights / weights.sum())].tolist()


class LiveEvents:
    """``with LiveEvents(settings, env, users, items, rate):`` a stream worker running and
    watch events produced at ``rate``/s until the block ends; ``produced`` counts them."""

    def __init__(self, settings, env: dict[str, str], users, items, rate: float) -> None:
        self.settings, self.env, self.rate = settings, env, rate
        self.users, self.items = users, items
        self.produced = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> LiveEvents:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "stream", "--metrics-port", "-1"],
            cwd=ROOT,
            env={**self.env, "STREAMREC_LOG_LEVEL": "WARNING"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_consuming()
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(30)

    def _event(self, user: str, item: str, n: int) -> bytes:
        doc = {
            "event_type": "watch",
            "event_id": f"live-{n}",
            "user_id": user,
            "item_id": item,
            "ts": datetime.now(UTC).isoformat(),
        }
        return orjson.dumps(doc)

    def _wait_consuming(self) -> None:
        """Until the worker applies events (a probe event's history is in Redis)."""
        from core.kafka import EventProducer
        from core.redis import connect
        from schemas.redis_keys import RedisKeys

        s = self.settings
        p = EventProducer(s.kafka)
        p.produce(s.topic("watch"), self._event("live-probe", self.items[0], -1), b"live-probe")
        p.flush(30)
        keys = RedisKeys(s.redis.key_prefix, s.kafka.topic_partitions).user_slot("live-probe")
        r = connect(s.redis.url, cluster=s.redis.cluster)
        deadline = time.monotonic() + 90
        while not r.exists(keys.user_recent("live-probe")):
            if self._proc is None or self._proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the stream worker of --realistic did not start")
            time.sleep(0.2)

    def _produce(self) -> None:
        import numpy as np

        from core.kafka import EventProducer

        s = self.settings
        p = EventProducer(s.kafka, **{"linger.ms": 5})
        topic = s.topic("watch")
        rng = np.random.default_rng(11)
        users = zipf_users(self.users, 200_000, seed=13)
        items = [self.items[i] for i in rng.integers(0, len(self.items), 200_000)]
        start = time.perf_counter()
        n = 0
        while not self._stop.is_set():
            due = int((time.perf_counter() - start) * self.rate)
            while n < due:
                user = users[n % len(users)]
                p.produce(topic, self._event(user, items[n % len(items)], n), user.encode())
                n += 1
            self.produced = n
            p.poll(0)
            time.sleep(0.01)
        p.flush(30)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _kb(path: Path, field: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its descendants (live ones: a worker that
    exited takes its share along)."""
    procs = [pid]
    for p in procs:
        procs += _children(p)
    ticks = 0
    for p in procs:
        try:
            # Fields after the command (which may hold spaces): utime, stime are 14 and 15.
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def worker_memory(pid: int) -> list[dict[str, float]]:
    """RSS/PSS (MB) of every process in ``pid``'s tree that holds a model: the biggest
    ones (uvicorn's supervisor and multiprocessing helpers are small)."""
    procs = [pid]
    for p in procs:  # breadth-first over the tree
        procs += _children(p)
    out = []
    for p in procs:
        try:
            rss = _kb(Path(f"/proc/{p}/status"), "VmRSS") / 1024
            pss = _kb(Path(f"/proc/{p}/smaps_rollup"), "Pss") / 1024
        except OSError:
            continue
        out.append({"pid": p, "rss_mb": round(rss, 1), "pss_mb": round(pss, 1)})
    return [m for m in out if m["rss_mb"] > 150] or out
