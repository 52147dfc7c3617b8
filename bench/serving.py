"""Serving benchmark: ``/recommend`` for known users vs a bare FastAPI endpoint returning a
fixed JSON list, both under the same uvicorn settings (workers, uvloop, httptools, no
access log), load from separate processes (``bench/_load.py``):

* max throughput: wrk (Debian package ``wrk``; installed with apt-get when missing);
* latency at a fixed rate (half of our max): a paced open-loop generator that measures from
  each request's *scheduled* send time (no coordinated omission).

Both servers run side by side and their runs alternate, so a noisy neighbour on a shared
machine hits both alike. Medians of ``--runs`` runs are reported, with the shares of our
answers that fell back and that came from the result cache (``--no-result-cache``: every
request runs the model).

    .venv/bin/python bench/serving.py [--workers 1] [--runs 3] [--duration 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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

from bench._load import ensure_wrk, paced, served_counts, shares, wrk_max  # noqa: E402

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

    from core.kafka import ensure_topics
    from core.redis import connect
    from core.storage import open_store
    from ingest.movielens import load_movielens
    from models import ModelRegistry
    from schemas.manifest import TrainingData
    from schemas.redis_keys import RedisKeys
    from schemas.split import temporal_test_mask
    from schemas.topics import partition_of
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

    r = connect(settings.redis_url, cluster=settings.redis_cluster, decode_responses=True)
    keys = RedisKeys(settings.redis_key_prefix, settings.topic_partitions)
    pipe = r.pipeline(transaction=False)
    order = np.argsort(ml.ts, kind="stable")
    recent: dict[str, dict[str, float]] = {}
    # Per partition, as the stream processor keeps them: an event counts in its user's slot.
    stats: dict[tuple[int, str], list[float]] = {}
    totals: dict[str, int] = {}
    for n in order.tolist():  # the last 20 events per user become their Redis history
        user, item, ts = ml.users[n], ml.items[n], float(ml.ts[n])
        hist = recent.setdefault(user, {})
        hist[item] = ts
        if len(hist) > 20:
            hist.pop(min(hist, key=hist.get))
        s = stats.setdefault((partition_of(user, keys.partitions), item), [0, 0.0, 0.0])
        s[0], s[1], s[2] = s[0] + 1, s[1] + float(ml.ratings[n]), ts
        totals[item] = totals.get(item, 0) + 1
    for user, hist in recent.items():
        pipe.zadd(keys.user_slot(user).user_recent(user), hist)
    for (part, item), (n, total, last) in stats.items():
        slot = keys.slot(part)
        pipe.hset(
            slot.item_stats(item), mapping={"n_rate": n, "rating_sum": total, "last_seen": last}
        )
        pipe.zadd(slot.pop_all, {item: n})
    top = sorted(totals.items(), key=lambda x: -x[1])[:1000]
    pipe.zadd(keys.trending, dict(top))
    pipe.execute()
    return sorted(recent, key=int)


def cleanup(settings) -> None:
    from core.kafka import delete_topics
    from core.redis import connect

    # On a cluster, SCAN visits every master and DEL is split by slot.
    r = connect(settings.redis_url, cluster=settings.redis_cluster)
    keys = list(r.scan_iter(f"{settings.redis_key_prefix}:*", count=10_000))
    for i in range(0, len(keys), 5000):
        r.delete(*keys[i : i + 5000])
    with contextlib.suppress(Exception):  # cleanup must not hide the benchmark's own error
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


KINDS = ("ours", "bare")


def measure(args: argparse.Namespace, users: list[str], ports: dict[str, int], console) -> dict:
    """Both servers run side by side and their runs alternate (ours, bare, ours, ...), so a
    noisy neighbour on a shared machine hits both alike; medians of ``args.runs``."""
    res: dict[str, dict] = {kind: {} for kind in KINDS}
    for kind in KINDS:  # long enough for every user to be asked a few times (fills caches)
        res[kind]["warm"] = wrk_max(ports[kind], users, 8, args.conns)
    before = served_counts(ports["ours"])
    runs: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(args.runs):
        for kind in KINDS:
            runs[kind].append(wrk_max(ports[kind], users, args.duration, args.conns))
    for kind in KINDS:
        res[kind].update(rps=statistics.median(runs[kind]), runs=runs[kind])
        console.print(f"{kind}: max throughput runs {runs[kind]} req/s")
    res["ours"].update(shares(before, served_counts(ports["ours"])))

    rate = res["ours"]["rps"] / 2
    before = served_counts(ports["ours"])
    paced_runs: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for _ in range(args.runs):
        for kind in KINDS:
            paced_runs[kind].append(paced(ports[kind], rate, args.duration, users))
    for kind in KINDS:
        out = {q: statistics.median(r[q] for r in paced_runs[kind]) for q in ("p50_ms", "p99_ms")}
        out["p99_runs"] = [round(r["p99_ms"], 1) for r in paced_runs[kind]]
        out["errors"] = sum(r["errors"] for r in paced_runs[kind])
        res[kind]["paced"] = out
        console.print(f"{kind} at {rate:.0f} req/s: {out}")
    res["ours"]["paced"].update(shares(before, served_counts(ports["ours"])))
    return res


# --- main ----------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--conns", type=int, default=16, help="wrk connections")
    ap.add_argument("--port", type=int, default=18090, help="ours; the bare endpoint: port+1")
    ap.add_argument("--no-result-cache", action="store_true", help="every request runs the model")
    args = ap.parse_args()
    ensure_wrk()  # before the minutes of setup, so a missing wrk fails fast
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
    ports = {"ours": args.port, "bare": args.port + 1}
    procs: list[subprocess.Popen] = []
    try:
        users = prepare(settings, console)
        for kind in KINDS:
            procs.append(start_server(kind, ports[kind], args.workers, env))
        res = measure(args, users, ports, console)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        cleanup(settings)
        shutil.rmtree(tmp, ignore_errors=True)
    report(console, args, res, res["ours"]["rps"] / 2)


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
