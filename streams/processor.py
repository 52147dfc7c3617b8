"""The delivery core: per-partition state, the two cadences and commit-after-durable.

Order of effects for each micro-batch of a partition (the invariant behind exactly-once):

1. dead letters are produced and flushed to Kafka;
2. features are applied to Redis in one Lua script together with the watermark;
3. rows join the partition's Parquet buffer.

Every ``flush`` interval (or ``flush_events``) the buffers are cut into a flush job, written
as Parquet files on a background thread (:mod:`streams.flush`), and only once the job is
durable is each partition's offset committed, up to the offset the job was cut at. So a
committed offset always means: its dead letters sent, its features applied, its rows durable.
Whatever was done after the last commit is redone after a crash: Redis skips offsets at or
below the watermark, and the snapshot writer removes uncommitted files on assignment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from core.kafka import DeliveryStats, EventProducer
from schemas.redis_keys import RedisKeys
from schemas.topics import DEAD_LETTER
from streams.decode import Decoded, RawRecord, decode_batch
from streams.features import Limits, TtlTracker, compute_deltas, to_payload
from streams.flush import BackgroundFlusher, FlushJob, cut_job
from streams.metrics import StreamMetrics
from streams.redis_sink import APPLIED, CONFLICT, PartitionBatch, RedisSink
from streams.retry import retry
from streams.snapshots import SnapshotWriter, split_by_day, to_table
from streams.state import TP, PartitionState, Totals

log = logging.getLogger(__name__)

FRESHNESS_SAMPLES = 64


class Processor:
    def __init__(
        self,
        *,
        settings: object,
        event_types: Mapping[str, str],  # full topic name -> event type
        redis: RedisSink,
        writer: SnapshotWriter,
        producer: EventProducer,
        genres: Mapping[str, Sequence[str]],
        commit: Callable[[dict[TP, int]], None],
        metrics: StreamMetrics,
        stop: threading.Event,
    ) -> None:
        s = settings
        self.event_types = event_types
        self.redis, self.writer, self.producer = redis, writer, producer
        self.genres = genres
        self._commit = commit
        self.metrics = metrics
        self.stop = stop
        self.keys = RedisKeys(s.redis_key_prefix)  # type: ignore[attr-defined]
        self.limits = Limits.from_settings(s)
        self.dlq_topic = s.topic(DEAD_LETTER)  # type: ignore[attr-defined]
        self.flush_events = s.stream_flush_events  # type: ignore[attr-defined]
        self.flush_interval = s.stream_flush_interval_s  # type: ignore[attr-defined]
        self.retry_max = s.stream_retry_max_s  # type: ignore[attr-defined]
        self.parts: dict[TP, PartitionState] = {}
        self.totals = Totals()
        self.max_event_ts = 0.0
        self._pending_since: float | None = None
        self._buffered = 0
        # A refresh window far below every TTL, so a skipped EXPIRE never lets a key lapse.
        lim = self.limits
        min_ttl = min(lim.user_ttl_s, lim.item_ttl_s, lim.pop_hour_ttl_s, lim.pop_day_ttl_s)
        self.ttls = TtlTracker(min(s.stream_ttl_refresh_s, min_ttl / 10))  # type: ignore[attr-defined]
        self.flusher = BackgroundFlusher(writer, lambda fn, sink: self._retry(fn, sink))

    def _retry(self, fn: Callable, sink: str):  # type: ignore[no-untyped-def]
        return retry(
            fn, sink=sink, metrics=self.metrics, stop=self.stop, max_backoff_s=self.retry_max
        )

    # --- assignment -----------------------------------------------------------------
    def assign(self, committed: Mapping[TP, int]) -> None:
        """Take partitions over from their committed offsets (-1: none): drop their
        uncommitted snapshot files and learn their Redis watermarks."""
        for (topic, p), off in committed.items():
            etype = self.event_types[topic]
            self._retry(
                lambda e=etype, p=p, o=off: self.writer.remove_uncommitted(e, p, max(o, 0)),
                "storage",
            )
            st = PartitionState(topic, p, etype, committed=off, next_offset=off, flushed_to=off)
            self.parts[(topic, p)] = st
        by_topic: dict[str, list[int]] = {}
        for topic, p in committed:
            by_topic.setdefault(topic, []).append(p)
        for topic, ps in by_topic.items():
            wms = self._retry(lambda t=topic, ps=ps: self.redis.watermarks(t, ps), "redis")
            for p, wm in wms.items():
                self.parts[(topic, p)].redis_wm = wm

    def drop(self, tps: Sequence[TP]) -> None:
        """Forget partitions (revoked or lost) and whatever was not committed for them."""
        for tp in tps:
            st = self.parts.pop(tp, None)
            if st:
                self._buffered -= st.buffered

    # --- the Redis cadence ----------------------------------------------------------
    def process(self, batches: Mapping[TP, list[RawRecord]]) -> None:
        now = time.time()
        work: list[tuple[PartitionState, int, int, Decoded]] = []
        dead = []
        for tp, recs in batches.items():
            st = self.parts.get(tp)
            if st is None:
                continue  # not ours (any more)
            if st.next_offset >= 0 and recs[0][0] < st.next_offset:
                before = len(recs)
                recs = [r for r in recs if r[0] >= st.next_offset]
                self.totals.duplicates += before - len(recs)
                self.metrics.events.labels(st.event_type, "duplicate").inc(before - len(recs))
                if not recs:
                    continue
            dec = decode_batch(
                recs, event_type=st.event_type, topic=st.topic, partition=st.partition, now=now
            )
            work.append((st, recs[0][0], recs[-1][0], dec))
            dead.extend(d for d in dec.dead if d.source_offset > st.redis_wm)
        if not work:
            return
        if dead:
            self._retry(lambda: self._send_dead(dead), "kafka")
        self._apply_redis(work)
        applied_at = time.time()
        for st, _first, last, dec in work:
            n_ok, n_dead = len(dec.events), len(dec.dead)
            self.metrics.events.labels(st.event_type, "ok").inc(n_ok)
            if n_dead:
                self.metrics.events.labels(st.event_type, "dead_letter").inc(n_dead)
                self.metrics.dead_letters.labels(st.topic).inc(n_dead)
            self.totals.processed += n_ok
            self.totals.dead_lettered += n_dead
            self._observe_freshness(applied_at, dec.produced_ms)
            for day, (evs, offs) in split_by_day(dec.events, dec.offsets).items():
                st.buffers.setdefault(day, []).append(
                    to_table(st.event_type, evs, offs, st.partition)
                )
            st.buffered += n_ok
            self._buffered += n_ok
            st.next_offset = last + 1
        if self._pending_since is None:
            self._pending_since = time.monotonic()

    def _observe_freshness(self, applied_at: float, produced_ms: list[float | None]) -> None:
        # A systematic sample (every event of small batches, <= FRESHNESS_SAMPLES of big
        # ones, always the oldest): per-event observations would cost more than the rest.
        step = max(1, len(produced_ms) // FRESHNESS_SAMPLES)
        obs = self.metrics.freshness.observe
        for ts in produced_ms[::step]:
            if ts:
                obs(max(0.0, applied_at - ts / 1000))

    def _send_dead(self, dead: list) -> None:  # type: ignore[type-arg]
        self.producer.stats = DeliveryStats()
        for d in dead:
            self.producer.produce(self.dlq_topic, d.value or b"", d.key, headers=d.headers())
        self.producer.flush(30)

    def _apply_redis(self, work: list[tuple[PartitionState, int, int, Decoded]]) -> None:
        batches = []
        for st, first, last, dec in work:
            evs = dec.events
            if first <= st.redis_wm:  # replay after a crash: skip what Redis already has
                evs = [e for e, o in zip(dec.events, dec.offsets, strict=True) if o > st.redis_wm]
                first = st.redis_wm + 1
            if last <= st.redis_wm:
                continue
            deltas = compute_deltas(evs, self.genres)
            self.max_event_ts = max(self.max_event_ts, deltas.max_ts)
            refreshed: list[str] = []
            ops = to_payload(
                deltas, self.keys, self.limits, time.time(), fresh=self.ttls, refreshed=refreshed
            )
            batches.append(
                PartitionBatch(st.topic, st.partition, first, last, ops, tuple(refreshed))
            )
        n_events = sum(len(w[3].events) for w in work)
        while batches:
            t0 = time.perf_counter()
            results = self._retry(lambda b=batches: self.redis.apply(b), "redis")
            self.metrics.redis_seconds.observe(time.perf_counter() - t0)
            self.metrics.redis_batch_events.observe(n_events)
            retry_batches = []
            for res in results:
                st = self.parts[(res.batch.topic, res.batch.partition)]
                st.redis_wm = max(st.redis_wm, res.watermark)
                if res.status == APPLIED:
                    self.ttls.confirm(res.batch.refreshed)
                elif res.status == CONFLICT:  # another writer got there first: resend the rest
                    log.warning(
                        "redis watermark of %s[%d] is %d, above this batch's start %d",
                        st.topic,
                        st.partition,
                        res.watermark,
                        res.batch.first,
                    )
                    dec = next(w[3] for w in work if w[0] is st)
                    evs = [
                        e for e, o in zip(dec.events, dec.offsets, strict=True) if o > res.watermark
                    ]
                    ops = to_payload(
                        compute_deltas(evs, self.genres), self.keys, self.limits, time.time()
                    )
                    retry_batches.append(
                        PartitionBatch(
                            st.topic, st.partition, res.watermark + 1, res.batch.last, ops
                        )
                    )
            batches = retry_batches

    # --- the Parquet cadence --------------------------------------------------------
    def flush_due(self) -> bool:
        if self._pending_since is None:
            return False
        return (
            self._buffered >= self.flush_events
            or time.monotonic() - self._pending_since >= self.flush_interval
        )

    def poll_flush(self) -> None:
        """The loop's step of the Parquet cadence: commit a finished write, start the next
        when due. While a write is in flight the loop keeps going, unless the buffers grow
        past twice ``flush_events`` (storage slow or down): then it waits for the write."""
        if self.flusher.busy:
            if not (self.flusher.done() or self._buffered >= 2 * self.flush_events):
                return
            self._finish(self.flusher.wait())
        if self.flush_due():
            self._start()

    def flush(self) -> int:
        """Write everything processed so far and commit it before returning (revoke,
        caught up, stop). Returns the files written."""
        files = 0
        if self.flusher.busy:
            files += self._finish(self.flusher.wait())
        if self._start():
            files += self._finish(self.flusher.wait())
        self._pending_since = None
        return files

    def _start(self) -> bool:
        states = [st for st in self.parts.values() if st.unflushed]
        self._pending_since = None
        if not states:
            return False
        self._buffered -= sum(st.buffered for st in states)
        self.flusher.start(cut_job(states))
        return True

    def _finish(self, job: FlushJob) -> int:
        """Commit a durable job's offsets: only of partitions still ours (a partition lost
        meanwhile is replayed by its next owner)."""
        offsets = {
            (st.topic, st.partition): off
            for st, off in job.parts
            if self.parts.get((st.topic, st.partition)) is st
        }
        if offsets:
            self._retry(lambda: self._commit(offsets), "kafka")
        for st, off in job.parts:
            st.committed = max(st.committed, off)
            self.metrics.committed.labels(st.topic, str(st.partition)).set(st.committed)
        files = len(job.files)
        self.totals.files_written += files
        self.metrics.files_written.inc(files)
        self.metrics.flush_seconds.observe(time.perf_counter() - job.started)
        self.metrics.flush_events.observe(job.events)
        log.debug("flushed %d events in %d files; committed %s", job.events, files, offsets)
        return files

    def close(self) -> None:
        self.flusher.close()
