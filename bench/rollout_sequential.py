"""The online check of issue 19: SASRec rolled out as a canary against ALS+LightGBM in
production, judged by the rollout controller on live conversion from the closed-loop
simulator (tests/test_rollout_e2e.py's setup: the stream worker and the API as processes on
the shared Kafka/Redis under a throwaway prefix).

    python bench/rollout_sequential.py [--rate 80] [--min-samples 300] [--epochs 20]

Both models learn from MovieLens-100K's train split (each user's first 80%); the simulated
users' futures are the test split. ALS+LightGBM is the trainer's recipe shifted by one (the
ranker learns from the validation split carved from train); SASRec is fitted on train (kept
under data/bench/ml-100k/sasrec-cache). Prints the controller's decision and each variant's
served requests and conversion.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402

from bench._ml_splits import cached_sasrec  # noqa: E402
from core.config import Settings  # noqa: E402
from ingest.movielens import load_movielens  # noqa: E402
from models.registry import ModelRegistry  # noqa: E402
from rollout.controller import RolloutController  # noqa: E402
from rollout.live_source import LiveMetricsSource  # noqa: E402
from rollout.simulator import Simulator, future_interactions, simulate_in_thread  # noqa: E402
from schemas.manifest import TrainingData  # noqa: E402
from schemas.split import temporal_test_mask  # noqa: E402
from training.catalog import ItemCatalog  # noqa: E402
from training.data import build_interactions  # noqa: E402
from training.select import Cut, learn_ranker  # noqa: E402
from training.train import TrainConfig  # noqa: E402
from training.tune import validation_split  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=80.0, help="simulated requests per second")
    ap.add_argument("--min-samples", type=int, default=300, help="per variant and step")
    ap.add_argument("--epochs", type=int, default=20, help="SASRec epochs")
    ap.add_argument("--max-s", type=float, default=900.0, help="give up after this long")
    args = ap.parse_args()
    console = Console(width=140)
    from streamrec import stack

    base = Settings()
    tmp = Path(tempfile.mkdtemp(prefix="rollout-seq-"))
    tag = f"b{uuid.uuid4().hex[:10]}"
    s = base.model_copy(update={"data_dir": tmp / "data"}).with_sections(
        kafka={"topic_prefix": tag},
        redis={"key_prefix": tag},
        storage={"url": f"file://{tmp / 'storage'}"},
        serve={"port": free_port(), "budget_ms": 5000.0, "alias_poll_s": 0.5},
        stream={"metrics_port": free_port(), "flush_interval_s": 2.0},
        online_eval={"window_s": 120.0},
        rollout={"steps": "10,50,100", "min_samples": args.min_samples, "settle_s": 2.0,
                 "poll_s": 1.0, "p99_slack_ms": 250.0},
    )  # fmt: skip
    ml = load_movielens(base.cache_path)
    data = build_interactions(ml.interactions())
    train = data.subset(~temporal_test_mask(data.users, data.ts))
    catalog = ItemCatalog.align(ml.catalog, data.item_ids, "movielens")
    cfg = TrainConfig.from_settings(base.train, base.cache_path)
    with console.status("training ALS+LightGBM and SASRec on the train split"):
        inner, valid = validation_split(train)
        ranker, _ = learn_ranker(Cut(inner, catalog, cfg).generator(), valid, None, cfg)
        two_stage = Cut(train, catalog, cfg).model("als+lgbm", ranker)
        cache = REPO / "data" / "bench" / "ml-100k" / "sasrec-cache"
        sasrec = cached_sasrec(train, args.epochs, cache, str(base.cache_path / "jax"))
    registry = ModelRegistry.from_settings(s.storage, s.model_name)
    v_prod = registry.publish(
        two_stage, training_data=TrainingData(), params={}, metrics={}, notes="als+lgbm"
    ).version
    v_seq = registry.publish(
        sasrec, training_data=TrainingData(), params={}, metrics={}, notes="sasrec"
    ).version
    registry.promote(v_prod, reason="baseline", actor="bench")
    test = ml.subset("test")
    source = None
    stop = threading.Event()
    try:
        stack.up(s, ["stream"])
        stack.up(s, ["api"])
        api = f"http://127.0.0.1:{s.serve.port}"
        sim = Simulator(
            s.kafka,
            s.simulate,
            api,
            future_interactions(test.users, test.items),
            rate=args.rate,
            seed=1,
        )
        thread, result = simulate_in_thread(sim, stop=stop, duration_s=args.max_s)
        deadline = time.monotonic() + 120
        while sim.stats.by_variant.get(f"production v{v_prod}") is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"no production answers: {sim.stats}")
            time.sleep(0.5)
        source = LiveMetricsSource.from_settings(s)
        ctl = RolloutController(registry, source, s.rollout)
        ctl.request(v_seq, actor="bench")
        end = time.monotonic() + args.max_s
        outcome = ctl.run(should_stop=lambda: time.monotonic() > end)
        stop.set()
        thread.join(60)
        doc = registry.aliases()
        console.print(f"decision: {outcome.kind}: {outcome.message}")
        for h in doc.history:
            if h.actor != "rollout":
                continue
            ev = h.evidence or {}
            can, prod = ev.get("canary", {}), ev.get("production", {})
            console.print(
                f"  {h.action} v{h.version} weight {h.weight}: canary served "
                f"{can.get('served')} conversion {can.get('conversion_rate')}; production "
                f"served {prod.get('served')} conversion {prod.get('conversion_rate')}; "
                f"test {ev.get('test')}"
            )
        stats = result[0] if result else sim.stats
        for name, counts in sorted(stats.by_variant.items()):
            console.print(
                f"  simulator {name}: {counts.requests} requests, {counts.watches} watches, "
                f"conversion {counts.conversion:.3f}"
            )
        console.print(f"  errors {stats.errors}; load {os.getloadavg()}")
    finally:
        stop.set()
        if source is not None:
            source.close()
        stack.down(s, ["api", "stream"])
        _cleanup(s)
    return 0


def _cleanup(s: Settings) -> None:
    """The throwaway prefix's topics and keys (as the tests' fixture does)."""
    try:
        from core.kafka import delete_topics

        delete_topics(s.kafka, timeout=10)
        import redis

        r = redis.Redis.from_url(s.redis.url)
        keys = list(r.scan_iter(f"{s.redis.key_prefix}:*", count=10_000))
        for i in range(0, len(keys), 10_000):
            r.delete(*keys[i : i + 10_000])
    except Exception as err:  # best effort: a leftover prefix is only clutter
        print(f"cleanup: {err}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
