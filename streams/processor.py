"""The delivery core: per-partition state, the two cadences and commit-after-durable.

Order of effects for each micro-batch of a partition (the invariant behind exactly-once):

1. dead letters are produced and flushed to Kafka;
2. features are applied to Redis in one Lua script together with the watermarks (and the
   event-id dedupe sets) of all the micro-batch's partitions (:mod:`streams.redis_apply`,
   on a thread of its own while the next batch is decoded; applied before any of its
   offsets is committed); the online-evaluation join of the batch follows once it is applied,
   while the next batch's features are applied (and before its offsets can be committed);
3. rows join the partition's Parquet buffer (Python rows; the flush job builds the tables).

Every ``flush`` interval (or ``flush_events``) the buffers are cut into a flush job, written
as Parquet files on a background thread (:mod:`streams.flush`), and only once the job is
durable and the Redis calls of its offsets are applied (and joined: a job can be cut while
the last call is in flight; the loop does not wait for it) is each partition's offset
committed, up to the offset the job was cut at. So a
committed offset always means: its dead letters sent, its features applied, its rows durable.
Whatever was done after the last commit is redone after a crash: Redis skips offsets at or
below the watermark, and the snapshot writer removes uncommitted files on assignment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TypeVar

from core.config import OnlineEvalSettings, StreamSettings
from schemas.dead_letter import DeadLetter
from schemas.redis_keys import RedisKeys
from streams.dead_letters import DeadLetterSender
from streams.decode import RawRecord, decode_batch
from streams.features import Limits, TtlTracker
from streams.flush import BackgroundFlusher, FlushJob, cut_job
from streams.keys import check_keys
from streams.loop_trace import LoopTrace
from streams.metrics import StreamMetrics
from streams.online_eval import OnlineEval
from streams.redis_apply import RedisApplier, RedisWork
from streams.redis_sink import RedisSink
from streams.retry import retry
from streams.snapshots import SnapshotWriter
from streams.state import TP, PartitionState, Totals

log = logging.getLogger(__name__)
T = TypeVar("T")


class Processor:
    def __init__(
        self,
        *,
        stream: StreamSettings,
        online_eval: OnlineEvalSettings,
        keys: RedisKeys,  # the worker's key space (redis.key_prefix, kafka.topic_partitions)
        event_types: Mapping[str, str],  # full topic name -> event type
        redis: RedisSink,
        writer: SnapshotWriter,
        dead_letters: DeadLetterSender | None,
        genres: Mapping[str, Sequence[str]],
        commit: Callable[[dict[TP, int]], None],
        metrics: StreamMetrics,
        stop: threading.Event,
        totals: Totals | None = None,
    ) -> None:
        s = stream
        self.event_types = event_types
        self.redis, self.writer, self.dead_letters = redis, writer, dead_letters
        self.genres = genres
        self._commit = commit
        self.metrics = metrics
        self.stop = stop
        self.keys = keys
        self.limits = Limits.from_settings(s)
        self.flush_events = s.flush_events
        self.flush_interval = s.flush_interval_s
        self.retry_max = s.retry_max_s
        self.parts: dict[TP, PartitionState] = {}
        self.totals = Totals() if totals is None else totals  # the worker's, read by its callers
        self._pending_since: float | None = None
        self._buffered = 0
        # A refresh window far below every TTL, so a skipped EXPIRE never lets a key lapse.
        lim = self.limits
        min_ttl = min(lim.user_ttl_s, lim.item_ttl_s, lim.pop_hour_ttl_s, lim.pop_day_ttl_s)
        self.ttls = TtlTracker(min(s.ttl_refresh_s, min_ttl / 10))
        self.flusher = BackgroundFlusher(
            writer,
            lambda fn, sink: self._retry(fn, sink),
            writers=s.parquet_writers,
        )
        self.applier = RedisApplier(
            redis=redis,
            keys=self.keys,
            limits=self.limits,
            genres=genres,
            ttls=self.ttls,
            metrics=metrics,
            retry=lambda fn, sink: self._retry(fn, sink),
            dedupe_window=s.dedupe_window,
        )
        # Online evaluation (issue 7): each batch's join runs once its features are in
        # Redis and before its offsets can be committed (see streams.online_eval).
        self.online_eval = OnlineEval.from_settings(online_eval, keys, redis, metrics.registry)
        self._joining: list[RedisWork] = []  # the batch in Redis now, to join once applied
        # Batches submitted to Redis, and of those: applied, and joined (their online-
        # evaluation join done, which runs on the Redis thread after the next batch's
        # features). A flush job remembers ``_submitted`` when it is cut; its offsets are
        # committed once ``_joined`` reaches it (written by the Redis thread: plain ints).
        self._submitted = self._applied = self._joined = 0
        # The dev-only loop timeline's current batch (streams.loop_trace; None: off).
        self.trace: LoopTrace | None = None

    @property
    def max_event_ts(self) -> float:
        """Newest event time applied to Redis (epoch seconds; 0: none yet)."""
        return self.applier.max_event_ts

    def _retry(self, fn: Callable[[], T], sink: str) -> T:
        return retry(
            fn, sink=sink, metrics=self.metrics, stop=self.stop, max_backoff_s=self.retry_max
        )

    # --- assignment -----------------------------------------------------------------
    def assign(self, committed: Mapping[TP, int]) -> None:
        """Take partitions over from their committed offsets (-1: none): drop their
        uncommitted snapshot files and learn their Redis watermarks."""
        self.applier.wait()  # a call in flight may still move watermarks of these
        for (topic, p), off in committed.items():
            etype = self.event_types[topic]
            self._retry(partial(self.writer.remove_uncommitted, etype, p, max(off, 0)), "storage")
            st = PartitionState(topic, p, etype, committed=off, next_offset=off, flushed_to=off)
            self.parts[(topic, p)] = st
        by_topic: dict[str, list[int]] = {}
        for topic, p in committed:
            by_topic.setdefault(topic, []).append(p)
        for topic, ps in by_topic.items():
            wms = self._retry(partial(self.redis.watermarks, topic, ps), "redis")
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
        """Decode, send dead letters, start the Redis call (after the previous one is done)
        and buffer the rows; returns while Redis applies, so the caller can fetch and decode
        the next batch meanwhile."""
        now = time.time()
        work: list[RedisWork] = []
        dead: list[DeadLetter] = []
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
            check_keys(recs, dec, topic=st.topic, partition=st.partition, now=now)
            work.append(
                RedisWork(st, recs[0][0], recs[-1][0], dec.events, dec.offsets, dec.produced_ms)
            )
            # The watermark is the one known before this batch (the call in flight covers
            # earlier offsets only), so a replayed dead letter is not sent twice.
            dead.extend(d for d in dec.dead if d.source_offset > st.redis_wm)
            n_ok, n_dead = len(dec.events), len(dec.dead)
            self.metrics.events.labels(st.event_type, "ok").inc(n_ok)
            if n_dead:
                self.metrics.events.labels(st.event_type, "dead_letter").inc(n_dead)
                self.metrics.dead_letters.labels(st.topic).inc(n_dead)
            self.totals.processed += n_ok
            self.totals.dead_lettered += n_dead
        if not work:
            return
        tr = self.trace
        if tr is not None:
            t0 = time.perf_counter()
            tr.add("decode", t0 - tr.consumed)
        if dead:  # before the features: a committed offset means its dead letters are sent
            self.applier.wait()
            assert self.dead_letters is not None
            self._retry(self.dead_letters.sender(dead), "kafka")
        # submit() prepares this batch's call while the previous one is still in Redis,
        # then waits for that one and starts this one. The previous batch's online-evaluation
        # join goes to Redis right after this batch's features, on the Redis thread (the
        # previous call is done by then, so the events it did not count are known), so it
        # delays neither this batch's visibility nor the consumer thread. The join script is
        # exact in either order of a response and its watch (see streams.online_eval) and its
        # own watermark makes a replay a no-op; it is done before any offset of its batch can
        # be committed (_finish waits for it, or joins the batch in flight itself).
        prev, self._joining = self._joining, work
        self._submitted += 1
        then = partial(self._applied_then, self._submitted, prev, tr)
        if tr is not None:
            t1 = time.perf_counter()
            tr.add("redis_wait", t1 - t0)  # the dead letters' wait, if any
        self.applier.submit(work, then=then)
        if tr is not None:
            tr.add("submit", time.perf_counter() - t1)
        for w in work:
            st = w.st
            st.buffer[0].extend(w.events)
            st.buffer[1].extend(w.offsets)
            st.buffered += len(w.events)
            self._buffered += len(w.events)
            st.next_offset = w.last + 1
        if self._pending_since is None:
            self._pending_since = time.monotonic()

    # --- the Parquet cadence --------------------------------------------------------
    def flush_due(self) -> bool:
        if self._pending_since is None:
            return False
        return (
            self._buffered >= self.flush_events
            or time.monotonic() - self._pending_since >= self.flush_interval
        )

    def _applied_then(self, seq: int, prev: list[RedisWork], tr: LoopTrace | None) -> None:
        """On the Redis thread, once batch ``seq`` is applied: note it, run the online-
        evaluation join of the batch before (``prev``, applied before this one), note that
        one joined."""
        if tr is not None:
            tr.note_applied()
        self._applied = seq
        self._add_join(prev)
        self._apply_join()
        self._joined = max(self._joined, seq - 1)

    def poll_flush(self) -> None:
        """The loop's step of the Parquet cadence: commit a finished write, start the next
        when due. While a write is in flight the loop keeps going, unless the buffers grow
        past twice ``flush_events`` (storage slow or down): then it waits for the write.
        A durable job is committed once the Redis calls of its offsets are applied and
        joined; until then the loop keeps going too (no wait for the call in flight)."""
        if self.flusher.busy:
            if self._buffered >= 2 * self.flush_events:
                self._finish(self.flusher.wait())
            elif not self.flusher.done():
                return
            else:
                job = self.flusher.job
                assert job is not None
                if self._joined < job.redis_seq:
                    if self._applied < self._submitted:
                        return  # its batch (or a later one) is still in Redis: next time
                    self._join_online_eval()  # Redis is idle: join the last batch now
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
        # The job may hold offsets whose Redis call is still in flight (the loop does not
        # wait for it here): it remembers the batches submitted so far, and _finish commits
        # its offsets only once those are applied and joined.
        states = [st for st in self.parts.values() if st.unflushed]
        self._pending_since = None
        if not states:
            return False
        self._buffered -= sum(st.buffered for st in states)
        job = cut_job(states)
        job.redis_seq = self._submitted
        self.flusher.start(job)
        return True

    def _join_online_eval(self) -> None:
        """Wait for the call in flight, then join the last batch (on this thread)."""
        self.applier.wait()
        work, self._joining = self._joining, []
        self._add_join(work)
        self._apply_join()
        self._joined = self._submitted

    def _add_join(self, work: list[RedisWork]) -> None:
        # The events Redis did not count (a re-sent id) are left out of the join as well.
        self.online_eval.add_work(
            w.without({j for j, off in enumerate(w.offsets) if off in w.dropped})
            if w.dropped
            else w
            for w in work
        )

    def _apply_join(self) -> None:
        # What is added stays in online_eval until its call succeeds (a later apply sends it).
        if self.online_eval.pending:
            self._retry(self.online_eval.apply, "redis")

    def _finish(self, job: FlushJob) -> int:
        """Commit a durable job's offsets: only of partitions still ours (a partition lost
        meanwhile is replayed by its next owner), and only once their features are applied
        in Redis and joined (waits for that if they are not yet)."""
        if self._joined < job.redis_seq:
            self._join_online_eval()
        offsets = {
            (st.topic, st.partition): off
            for st, off in job.parts
            if self.parts.get((st.topic, st.partition)) is st
        }
        if offsets:
            t0 = time.perf_counter()
            self._retry(lambda: self._commit(offsets), "kafka")
            if self.trace is not None:
                self.trace.add("commit", time.perf_counter() - t0)
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
        try:
            self.applier.close()
        finally:
            self.flusher.close()
