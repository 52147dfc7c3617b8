"""The main job, end to end: stack -> replay -> stream -> train -> serve -> fresh events.

Each step is a plain function taking a :class:`DemoContext`; ``run_demo`` runs them in order,
and any failure becomes a :class:`DemoError` that names the step and the log to read.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from core.config import Settings
from core.kafka import EventProducer, check_kafka, end_offsets, ensure_topics, group_lag
from core.redis import connect
from ingest.movielens import MovieLens, load_movielens
from ingest.replay import replay_movielens
from schemas.errors import StreamrecError
from schemas.events import WatchEvent, make_event_id
from schemas.redis_keys import RedisKeys
from schemas.topics import EVENT_TOPICS, WATCH
from streamrec import stack

log = logging.getLogger(__name__)

# Five classic science-fiction films a brand-new user watches in step 6.
FRESH_ITEMS = ("50", "172", "181", "183", "195")


class DemoError(StreamrecError):
    def __init__(self, step: str, cause: str, log_path: str) -> None:
        self.step, self.log_path = step, log_path
        super().__init__(f"step '{step}' failed: {cause} (see {log_path})")


@dataclass
class DemoContext:
    settings: Settings
    console: Console
    n_users: int | None = None  # replay only this many users (the end-to-end test)
    ml: MovieLens | None = None
    users: tuple[str, ...] = ()
    titles: dict[str, str] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.settings.serve.port}"

    def logs(self, name: str) -> str:
        return str(self.settings.data_path / "logs" / f"{name}.log")


def step_stack(ctx: DemoContext) -> None:
    states = stack.up(ctx.settings)
    ctx.console.print("  " + ", ".join(f"{s.name} {s.state} on :{s.port}" for s in states))
    ensure_topics(ctx.settings.kafka)


def _topic_size(settings: Settings, topic: str) -> int:
    return sum(high for _low, high in end_offsets(settings.kafka, [topic]).values())


def step_replay(ctx: DemoContext) -> None:
    ml = load_movielens(ctx.settings.cache_path)
    ctx.titles = {i.item_id: f"{i.title} ({i.year})" if i.year else i.title for i in ml.catalog}
    train = ml.subset("train")
    if ctx.n_users is not None:
        keep = np.isin(train.users, np.unique(train.users)[: ctx.n_users])
        train = MovieLens(
            train.users[keep], train.items[keep], train.ratings[keep], train.ts[keep], train.catalog
        )
    ctx.ml = train
    ctx.users = _showcase_users(train)
    # Replaying twice would put every event in Kafka twice; a rerun of the demo reuses them.
    if _topic_size(ctx.settings, ctx.settings.topic(WATCH)) >= len(train):
        ctx.console.print(
            f"  {ctx.settings.topic(WATCH)} already holds the train split; not replaying it again"
        )
        return
    with _progress(ctx.console) as progress:
        task = progress.add_task("replay train split", total=2 * len(train))
        stats = replay_movielens(
            ctx.settings.kafka, train, on_progress=lambda n: progress.advance(task, n)
        )
    ctx.facts["replay_rate"] = stats.rate
    ctx.facts["replayed_events"] = stats.events
    ctx.console.print(
        f"  {stats.events:,} events ({len(train):,} ratings) + "
        f"{stats.items:,} catalog items in {stats.seconds:.1f} s "
        f"({stats.rate:,.0f} events/s)"
    )


def _showcase_users(ml: MovieLens) -> tuple[str, ...]:
    """A light, a typical and a heavy user of the replayed data (deterministic)."""
    ids, counts = np.unique(ml.users, return_counts=True)
    order = ids[np.argsort(counts, kind="stable")]
    return tuple(dict.fromkeys([order[0], order[len(order) // 2], order[-1]]))


def step_stream(ctx: DemoContext) -> None:
    stack.up(ctx.settings, ["stream"])
    group = f"{ctx.settings.kafka.topic_prefix}.{ctx.settings.stream.app_id}"
    # The catalog topic is read whole at start-up, outside the group: not part of the lag.
    topics = [ctx.settings.topic(t) for t in EVENT_TOPICS]
    start = time.monotonic()
    total = group_lag(ctx.settings.kafka, group, topics) or 1
    with _progress(ctx.console) as progress:
        task = progress.add_task("stream processor catching up", total=total)
        while True:
            lag = group_lag(ctx.settings.kafka, group, topics)
            progress.update(task, completed=total - min(lag, total))
            if lag == 0:
                break
            if time.monotonic() - start > 300:
                raise TimeoutError(f"consumer lag still {lag:,} after 300 s")
            time.sleep(0.5)
    ctx.console.print(
        f"  caught up: consumer lag 0 for group {group} in {time.monotonic() - start:.1f} s"
    )


def step_train(ctx: DemoContext) -> None:
    from streamrec.cli.train import lift_line, metrics_table
    from training.pipeline import run_training

    with _progress(ctx.console) as progress:
        tasks: dict[str, TaskID] = {}

        def stage(name: str, total: int | None) -> Callable[[int], None]:
            tasks[name] = progress.add_task(name, total=total)
            return lambda done: progress.update(tasks[name], completed=done)

        report = run_training(ctx.settings, promote=True, force=True, progress=stage)
    ctx.console.print(metrics_table(report))
    ctx.console.print("  " + lift_line(report))
    if report.manifest is None:
        raise RuntimeError(f"no version was published: {report.decision.reason}")
    ctx.facts["version"] = report.manifest.version
    ctx.facts["metrics"] = report.metrics
    ctx.console.print(
        f"  published {report.manifest.name} v{report.manifest.version} as production"
    )


def _recommend(ctx: DemoContext, user: str, k: int = 10) -> dict:
    resp = httpx.get(f"{ctx.api}/recommend/{user}", params={"k": k}, timeout=5)
    resp.raise_for_status()
    return resp.json()


def step_serve(ctx: DemoContext) -> None:
    stack.up(ctx.settings, ["api"])
    s = ctx.settings
    keys = RedisKeys(s.redis.key_prefix, s.kafka.topic_partitions)
    r = connect(s.redis.url, cluster=s.redis.cluster, decode_responses=True)
    for user in ctx.users:
        answer = _recommend(ctx, user)
        ctx.facts[f"answer:{user}"] = answer
        recent = r.zrevrange(keys.user_slot(user).user_recent(user), 0, 4)
        table = Table(
            title=f"user {user}: {answer['variant']} model "
            f"{answer['model_name']} v{answer['model_version']}"
        )
        table.add_column("watched most recently")
        table.add_column("recommended next")
        for i in range(max(len(recent), 5)):
            table.add_row(
                ctx.titles.get(recent[i], recent[i]) if i < len(recent) else "",
                ctx.titles.get(answer["items"][i], answer["items"][i])
                if i < len(answer["items"])
                else "",
            )
        ctx.console.print(table)


def step_fresh(ctx: DemoContext) -> None:
    user = f"demo-{uuid.uuid4().hex[:6]}"
    before = _recommend(ctx, user)
    ctx.console.print(
        f"  new user {user}: {before['variant']} "
        f"({before.get('fallback_reason') or 'no history'}): "
        + ", ".join(ctx.titles.get(i, i) for i in before["items"][:5])
    )
    with EventProducer(ctx.settings.kafka) as producer:
        for n, item in enumerate(FRESH_ITEMS):
            producer.send(
                WatchEvent(
                    event_id=make_event_id("demo", user, item),
                    user_id=user,
                    item_id=item,
                    minute=n,
                    ts=datetime.now(UTC),
                )
            )
        producer.flush()
    sent = time.monotonic()
    ctx.console.print("  watched: " + ", ".join(ctx.titles.get(i, i) for i in FRESH_ITEMS))
    while True:
        after = _recommend(ctx, user)
        if after["variant"] != "fallback" and after["items"] != before["items"]:
            break
        if time.monotonic() - sent > 10:
            raise TimeoutError("recommendations did not change within 10 s of the events")
        time.sleep(0.05)
    elapsed = time.monotonic() - sent
    ctx.facts["fresh_seconds"] = elapsed
    ctx.facts["fresh_before"], ctx.facts["fresh_after"] = before, after
    ctx.console.print(
        f"  {elapsed:.2f} s later, {after['variant']} "
        f"v{after['model_version']}: " + ", ".join(ctx.titles.get(i, i) for i in after["items"][:5])
    )


def step_done(ctx: DemoContext) -> None:
    s = ctx.settings
    ctx.console.print(
        "  the stack, the stream worker and the API keep running:\n"
        f"    curl '{ctx.api}/recommend/1?k=10'           JSON\n"
        f"    curl '{ctx.api}/recommend/1?format=text'    the CMU course's comma-separated form\n"
        f"    {ctx.api}/docs                               OpenAPI docs\n"
        f"    {ctx.api}/metrics, http://127.0.0.1:{s.stream.metrics_port}/metrics, "
        f"http://127.0.0.1:{s.kafka.jmx_exporter_port}/metrics   Prometheus metrics\n"
        "    make down                                  stop everything"
    )


STEPS: tuple[tuple[str, str, Callable[[DemoContext], None], str], ...] = (
    ("stack", "Start the local stack (Kafka KRaft + Redis)", step_stack, "kafka"),
    ("replay", "Replay the MovieLens-100K train split through Kafka", step_replay, "kafka"),
    ("stream", "Run the stream processor until it has caught up", step_stream, "stream"),
    ("train", "Train from the Parquet snapshots, evaluate, publish", step_train, "stream"),
    ("serve", "Start the API and ask for recommendations", step_serve, "api"),
    ("fresh", "Feed fresh watch events and watch the answer change", step_fresh, "api"),
    ("done", "Still running", step_done, "api"),
)


def run_demo(settings: Settings, console: Console, *, n_users: int | None = None) -> DemoContext:
    ctx = DemoContext(settings, console, n_users=n_users)
    started = time.monotonic()
    for n, (name, title, fn, log_name) in enumerate(STEPS, 1):
        console.rule(f"[bold]{n}/{len(STEPS)} {title}")
        t0 = time.monotonic()
        try:
            if name != "stack":
                check_kafka(settings.kafka)
            fn(ctx)
        except Exception as err:  # any failure names the step and the log to read
            log.debug("demo step %s failed", name, exc_info=True)
            cause = str(err) if isinstance(err, StreamrecError) else f"{type(err).__name__}: {err}"
            raise DemoError(name, cause, ctx.logs(log_name)) from err
        console.print(f"  [dim]{name}: {time.monotonic() - t0:.1f} s[/]")
    console.rule(f"demo finished in {time.monotonic() - started:.0f} s")
    return ctx


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
