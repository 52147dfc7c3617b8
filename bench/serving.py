"""Serving benchmark: ``/recommend`` for known users vs a bare FastAPI endpoint returning a
fixed JSON list, both under the same uvicorn settings, load from separate processes.

* max throughput: wrk (Debian package ``wrk``; installed with apt-get when missing);
* latency at a fixed rate (half of our max): a paced open-loop generator (this file's
  ``paced`` subcommand, its own process) that measures from each request's *scheduled* send
  time, so a stalled server cannot hide queueing (no coordinated omission).

Medians of ``--runs`` runs are reported, with the shares of our answers that fell back
and that came from the result cache.

    .venv/bin/python bench/serving.py [--workers 1] [--runs 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
ITEMS = [str(i) for i in range(1, 21)]


def bare_app():
    """The baseline: the same framework and server, no work at all."""
    from fastapi import FastAPI

    app = FastAPI()
    body = {"user_id": "", "items": ITEMS}

    @app.get("/recommend/{user_id}")
    async def recommend(user_id: str, k: int = 20) -> dict:
        return body

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"status": "ready"}

    return app


# --- setup ---------------------------------------------------------------------------
def prepare(settings, console) -> list[str]:
    """Train and publish a two-stage model on MovieLens-100K, and fill Redis the way the
    stream processor would (recent items per user, item stats, trending). Returns users."""
    import numpy as np
    import pyarrow as pa
    import redis

    from core.kafka import ensure_topics
    from core.storage import open_store
    from ingest.movielens import load_movielens
    from models import ModelRegistry
    from schemas.manifest import TrainingData
    from schemas.redis_keys import RedisKeys
    from schemas.split import temporal_test_mask
    from training.catalog import ItemCatalog
    from training.data import build_interactions
    from training.train import TrainConfig, fit_two_stage, generator_for

    ml = load_movielens(settings.cache_path)
    table = pa.table(
        {
            "user_id": pa.array(ml.users.tolist(), pa.string()),
            "item_id": pa.array(ml.items.tolist(), pa.string()),
            "ts": pa.array((ml.ts * 1_000_000).tolist(), pa.timestamp("us", tz="UTC")),
            "rating": pa.array(ml.ratings, pa.float32()),
        }
    )
    data = build_interactions(table)
    held = temporal_test_mask(data.users, data.ts)
    train, test = data.subset(~held), data.subset(held)
    catalog = ItemCatalog.align(ml.catalog, data.item_ids, "movielens")
    console.print("training ALS + LightGBM on MovieLens-100K (train split)...")
    cfg = TrainConfig()
    gen, pop = generator_for(train, catalog, cfg)
    model, _ = fit_two_stage(gen, test, gen, pop, cfg)
    registry = ModelRegistry(open_store(settings.storage), settings.model_name)
    version = registry.publish(
        model, training_data=TrainingData(), params={}, metrics={}, notes="bench"
    ).version
    registry.promote(version, reason="bench", actor="bench")
    ensure_topics(settings)

    r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    keys = RedisKeys(settings.redis_key_prefix)
    pipe = r.pipeline(transaction=False)
    order = np.argsort(ml.ts, kind="stable")
    recent: dict[str, dict[str, float]] = {}
    stats: dict[str, list[float]] = {}
    for n in order.tolist():  # the last 20 events per user become their Redis history
        user, item, ts = ml.users[n], ml.items[n], float(ml.ts[n])
        hist = recent.setdefault(user, {})
        hist[item] = ts
        if len(hist) > 20:
            hist.pop(min(hist, key=hist.get))
        s = stats.setdefault(item, [0, 0.0, 0.0])
        s[0], s[1], s[2] = s[0] + 1, s[1] + float(ml.ratings[n]), ts
    for user, hist in recent.items():
        pipe.zadd(keys.user_recent(user), hist)
    for item, (n, total, last) in stats.items():
        pipe.hset(
            keys.item_stats(item), mapping={"n_rate": n, "rating_sum": total, "last_seen": last}
        )
    pipe.zadd(keys.pop_all, {i: s[0] for i, s in stats.items()})
    pipe.zadd(
        keys.trending,
        dict(sorted(((i, s[0]) for i, s in stats.items()), key=lambda x: -x[1])[:1000]),
    )
    pipe.execute()
    return sorted(recent, key=int)


def cleanup(settings) -> None:
    import redis

    from core.kafka import delete_topics

    r = redis.Redis.from_url(settings.redis_url)
    keys = list(r.scan_iter(f"{settings.redis_key_prefix}:*", count=10_000))
    for i in range(0, len(keys), 5000):
        r.delete(*keys[i : i + 5000])
    delete_topics(settings, timeout=10)


# --- servers and load ----------------------------------------------------------------
def start_server(kind: str, port: int, workers: int, env: dict[str, str]) -> subprocess.Popen:
    if kind == "ours":
        cmd = [sys.executable, "-m", "streamrec", "serve", "--port", str(port)]
        cmd += ["--workers", str(workers)]
    else:  # the same uvicorn settings `streamrec serve` uses
        cmd = [sys.executable, "-m", "uvicorn", "bench.serving:bare_app", "--factory"]
        cmd += ["--port", str(port), "--workers", str(workers), "--loop", "uvloop"]
        cmd += ["--http", "httptools", "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} server exited: {proc.stderr.read().decode()[-1000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"{kind} server not ready")


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    cmd = [*prefix, "apt-get", "install", "-y", "--no-install-recommends", "wrk"]
    if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
        subprocess.run([*prefix, "apt-get", "update"], capture_output=True, check=False)
        subprocess.run(cmd, capture_output=True, check=False)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is missing and apt-get could not install it: apt-get install wrk")
    return found


def wrk_max(port: int, users: list[str], duration: float, conns: int) -> float:
    script = Path(tempfile.mkdtemp()) / "users.lua"
    script.write_text(
        "local users = {" + ",".join(f'"{u}"' for u in users) + "}\n"
        "local i = math.random(#users)\n"
        "request = function()\n  i = i % #users + 1\n"
        '  return wrk.format("GET", "/recommend/" .. users[i] .. "?k=20")\nend\n'
    )
    out = subprocess.run(
        [ensure_wrk(), "-t2", f"-c{conns}", f"-d{int(duration)}s", "-s", str(script),
         f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} errors:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


async def _paced(port: int, rate: float, duration: float, conns: int, users: list[str]) -> dict:
    loop = asyncio.get_running_loop()
    idle: asyncio.Queue = asyncio.Queue()
    for _ in range(conns):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    errors = 0

    async def one(n: int, at: float) -> None:
        nonlocal errors
        reader, writer = conn = await idle.get()
        writer.write(
            f"GET /recommend/{users[n % len(users)]}?k=20 HTTP/1.1\r\nHost: b\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        await reader.readexactly(length)
        latencies.append(loop.time() - at)  # from the scheduled send time
        errors += not head.startswith(b"HTTP/1.1 200")
        idle.put_nowait(conn)

    start = loop.time() + 0.2
    tasks = []
    for n in range(int(rate * duration)):
        at = start + n / rate
        await asyncio.sleep(max(0.0, at - loop.time()))
        tasks.append(asyncio.create_task(one(n, at)))
    await asyncio.gather(*tasks)
    lat = sorted(latencies)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "n": len(lat), "errors": errors}


def paced(port: int, rate: float, duration: float, users: list[str]) -> dict:
    """Run the paced generator in its own process (load never shares our interpreter)."""
    out = subprocess.run(
        [sys.executable, __file__, "paced", "--port", str(port), "--rate", str(rate),
         "--duration", str(duration), "--users", ",".join(users)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out)


def served_counts(port: int) -> dict[str, float]:
    """/recommend answers so far by variant, and result-cache hits, from /metrics."""
    import httpx

    out: dict[str, float] = {"all": 0.0, "fallback": 0.0, "cache_hit": 0.0}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        value = line.split()[-1] if line and not line.startswith("#") else "0"
        if line.startswith("streamrec_serving_request_seconds_count") and "/recommend/" in line:
            out["all"] += float(value)
            out["fallback"] += float(value) if 'variant="fallback"' in line else 0.0
        elif line.startswith('streamrec_serving_result_cache_total{result="hit"}'):
            out["cache_hit"] += float(value)
    return out


def measure(kind: str, args: argparse.Namespace, env: dict, users: list[str], rate: float):
    """Median max throughput (rate 0) or median p50/p99 at ``rate``, on a fresh server."""
    proc = start_server(kind, args.port, args.workers, env)
    try:
        # Warm-up long enough for every user to be asked a few times (fills the caches).
        warm = wrk_max(args.port, users, 8, args.conns) if not rate else None
        before = served_counts(args.port) if kind == "ours" else None
        if not rate:
            runs = [wrk_max(args.port, users, args.duration, args.conns) for _ in range(args.runs)]
            out = {"rps": statistics.median(runs), "runs": runs, "warm": warm}
        else:
            paced(args.port, rate, 8, users)  # warm-up
            runs = [paced(args.port, rate, args.duration, users) for _ in range(args.runs)]
            out = {q: statistics.median(r[q] for r in runs) for q in ("p50_ms", "p99_ms")}
            out["errors"] = sum(r["errors"] for r in runs)
        if before is not None:
            after = served_counts(args.port)
            n = max(after["all"] - before["all"], 1.0)
            out["fallback"] = (after["fallback"] - before["fallback"]) / n
            out["cache_hit"] = (after["cache_hit"] - before["cache_hit"]) / n
        return out
    finally:
        proc.terminate()
        proc.wait(30)


# --- main ----------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", nargs="?", default="bench", choices=["bench", "paced"])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--conns", type=int, default=16, help="wrk connections")
    ap.add_argument("--port", type=int, default=18090)
    ap.add_argument("--no-result-cache", action="store_true", help="every request runs the model")
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--users", default="")
    args = ap.parse_args()
    if args.mode == "paced":
        import uvloop

        users = args.users.split(",")
        print(json.dumps(uvloop.run(_paced(args.port, args.rate, args.duration, 8, users))))
        return
    run_bench(args)


def run_bench(args: argparse.Namespace) -> None:
    from rich.console import Console

    from core.config import Settings

    console = Console()
    tag = f"bench{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    settings = Settings(topic_prefix=tag, redis_key_prefix=tag, storage_url=f"file://{tmp}")
    env = {
        **os.environ,
        "STREAMREC_TOPIC_PREFIX": tag,
        "STREAMREC_REDIS_KEY_PREFIX": tag,
        "STREAMREC_STORAGE_URL": settings.storage,
        "STREAMREC_LOG_LEVEL": "WARNING",
    }
    if args.no_result_cache:
        env["STREAMREC_SERVE_RESULT_CACHE_SIZE"] = "0"
    res: dict[str, dict] = {}
    try:
        users = prepare(settings, console)
        for kind in ("ours", "bare"):
            res[kind] = measure(kind, args, env, users, 0.0)
            console.print(f"{kind}: max throughput runs {res[kind]['runs']} req/s")
        rate = res["ours"]["rps"] / 2
        for kind in ("ours", "bare"):
            res[kind]["paced"] = measure(kind, args, env, users, rate)
            console.print(f"{kind} at {rate:.0f} req/s: {res[kind]['paced']}")
    finally:
        cleanup(settings)
        shutil.rmtree(tmp, ignore_errors=True)
    report(console, args, res, rate)


def report(console, args: argparse.Namespace, res: dict, rate: float) -> None:
    from rich.table import Table

    cache = "off" if args.no_result_cache else "on"
    title = f"{args.workers} worker(s), result cache {cache}, medians of {args.runs}"
    table = Table(title=f"serving benchmark ({title})")
    for col in ("endpoint", "max req/s", f"p50 @ {rate:.0f}/s", f"p99 @ {rate:.0f}/s"):
        table.add_column(col, justify="right")
    table.add_column("fallback / cache hit (max; paced)", justify="right")
    for kind, label in (("ours", "/recommend (model)"), ("bare", "bare FastAPI")):
        r, p = res[kind], res[kind]["paced"]
        shares = (
            f"{r['fallback']:.0%}/{r['cache_hit']:.0%}; {p['fallback']:.0%}/{p['cache_hit']:.0%}"
            if kind == "ours"
            else "-"
        )
        table.add_row(
            label, f"{r['rps']:.0f}", f"{p['p50_ms']:.1f} ms", f"{p['p99_ms']:.1f} ms", shares
        )
    console.print(table)
    ratio = res["ours"]["rps"] / res["bare"]["rps"]
    p99 = res["ours"]["paced"]["p99_ms"]
    console.print(
        f"throughput ours/bare: {ratio:.0%} (target >= 40%); "
        f"our p99 at half our max: {p99:.1f} ms (target < 25 ms)"
    )
    print(json.dumps({"rate": rate, "ratio": ratio, **res}))


if __name__ == "__main__":
    main()
