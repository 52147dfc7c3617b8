"""The Redis key layout: the contract between the stream processor (writer) and serving
(reader). Every key starts with a configurable prefix (``STREAMREC_REDIS_KEY_PREFIX``,
default ``sr``) so several deployments can share a Redis.

Slots: one Kafka partition's state is one hash slot
---------------------------------------------------
The layout runs unchanged on a standalone Redis and on a Redis Cluster, where one script or
MULTI may only touch keys of one hash slot. What the stream processor must change atomically
is a partition's watermark together with every feature its events touch (that is what makes
a re-delivered offset a no-op: exactly-once). So every key written by the processor's scripts
carries the **hash tag of its Kafka partition**: ``{p}:{pN}:...`` (written ``{P}`` below), and
one script call applies the events of one partition number (of every event topic: a user's
watch, rate and response events share the partition number, because producers key by user
and partition with Kafka's murmur2, :func:`schemas.topics.partition_of`). Exactly-once is the
same argument as before, made per partition: each call moves the watermarks of its own
partitions with their features in one atomic step, and a replay after a crash skips what a
partition's own watermark says is applied.

What follows from it:

* **Serving finds a user** without asking anyone: ``partition_of(user_id, partitions)``
  (``STREAMREC_TOPIC_PARTITIONS``) names the slot of all of the user's keys, so a request is
  one round trip to one node.
* **Item and popularity counters are per partition** (an item is watched by users of every
  partition); readers sum the ``partitions`` copies. The trending set is derived from them
  by the worker (read, weighted, written whole) and is the one global key serving reads.
* **Hot slots**: a slot carries 1/partitions of the event stream; with 3 masters, use at
  least 4x as many partitions as masters so the slots spread (``STREAMREC_TOPIC_PARTITIONS``).
* Keys written outside the scripts (the catalog, the trending set, serving's feedback
  dedupe) are single-key writes and carry no partition tag.

=============================================  ======  ===========================================
key                                            type    contents (TTL)
=============================================  ======  ===========================================
``{P}:user:{user}:recent``                     ZSET    item -> last watch/rate epoch seconds,
                                                       newest ``USER_RECENT_CAP`` kept (USER_TTL)
``{P}:user:{user}:ratings``                    HASH    item -> latest rating (USER_TTL; capped
                                                       with ``recent``)
``{P}:user:{user}:stats``                      HASH    n_watch, n_rate, rating_sum, last_active
                                                       (event epoch), updated_at (wall epoch)
                                                       (USER_TTL)
``{P}:user:{user}:genres``                     HASH    genre -> affinity (count of interactions
                                                       with items of that genre) (USER_TTL)
``{P}:item:{item}:stats``                      HASH    n_watch, n_rate, rating_sum, last_seen
                                                       (ITEM_TTL)
``{P}:pop:h:{YYYYMMDDHH}``                     ZSET    item -> interactions in that event-time
                                                       hour, top POP_CAP kept (POP_HOUR_TTL)
``{P}:pop:d:{YYYYMMDD}``                       ZSET    item -> interactions that event-time day,
                                                       top POP_CAP kept (POP_DAY_TTL)
``{P}:pop:all``                                ZSET    item -> all-time interactions, top
                                                       POP_CAP kept (no TTL): an item trimmed
                                                       off starts again from its next event
``{p}:trending``                               ZSET    item -> decayed popularity: the last
                                                       TRENDING_HOURS hourly buckets weighted
                                                       0.5 ** (age_hours / TRENDING_HALF_LIFE_H),
                                                       top TRENDING_CAP kept (no TTL)
``{p}:catalog:{item}``                         HASH    title, year, genres (``|``-joined) from the
                                                       compacted catalog topic (no TTL)
``{P}:wm:{topic}:{partition}``                 STRING  highest Kafka offset whose effects are
                                                       applied (no TTL): the idempotency watermark
``{P}:wm:{topic}:{partition}:ack``             STRING  written before each ``WAIT`` of a durable
                                                       call (``:oe:wm:`` too), so the ``WAIT``
                                                       covers what the call found applied
                                                       (``streams.redis_slots``) (10 min TTL)
``{P}:oe:h:{YYYYMMDDHH}``                      HASH    online evaluation counters of the
                                                       responses served in that event-time hour:
                                                       ``{model}|{version}|{variant}|{metric}``
                                                       -> count, metric ``served``,
                                                       ``converted`` or ``pos:{n}`` (1-based
                                                       position of the watched item, n capped at
                                                       ONLINE_EVAL_MAX_POSITION) (ONLINE_EVAL_TTL)
``{P}:oe:b:{epoch}``                           HASH    the same counters per ONLINE_EVAL_BUCKET_S
                                                       bucket of serve time starting at
                                                       ``epoch``: the rollout controller's
                                                       per-step cohorts (ONLINE_EVAL_BUCKET_TTL)
``{P}:oe:pending:{user}``                      HASH    join state: request id -> JSON ``[ts,
                                                       label, hour key, [items], bucket key]``
                                                       of the user's unconverted responses
                                                       inside the window (capped; TTL window +
                                                       1 h)
``{P}:oe:wm:{topic}:{partition}``              STRING  highest offset of ``reco_responses`` /
                                                       ``watch`` applied to the online
                                                       evaluation (no TTL)
``{P}:seen:{topic}:{partition}:{bucket}``      SET     event ids the stream processor applied at
                                                       offsets ``bucket * DEDUPE_WINDOW / 2`` ..
                                                       (half-window buckets): a re-sent id within
                                                       ``DEDUPE_WINDOW`` offsets of the partition
                                                       is not counted again; buckets past the
                                                       window are deleted (DEDUPE_TTL)
``{p}:serving:feedback:{event_id}``            STRING  ``1``: written by serving (not the stream
                                                       processor) with SET NX when it accepts a
                                                       ``POST /feedback``, so a re-sent event id
                                                       is a no-op (TTL
                                                       ``STREAMREC_SERVE_FEEDBACK_DEDUP_TTL_S``)
=============================================  ======  ===========================================

``{P}`` is ``{p}:{pN}`` for Kafka partition number N (:meth:`RedisKeys.slot`). Hours and
days are **event time** (UTC), so replaying old data builds the same buckets; TTLs count from
the write. Writers update a partition's batch in one Lua script together with its
watermark, so a re-delivered offset is never applied twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.topics import partition_of

USER_RECENT_CAP = 200
USER_TTL_S = 7 * 24 * 3600  # a user's history outlives a working day by a wide margin
ITEM_TTL_S = 90 * 24 * 3600
POP_HOUR_TTL_S = 48 * 3600
POP_DAY_TTL_S = 35 * 24 * 3600
# Items kept per popularity set (STREAMREC_STREAM_POP_CAP): item ids are not checked against
# the catalog (events may name an item before the catalog does), so a cap bounds them.
POP_CAP = 100_000
TRENDING_HOURS = 24
TRENDING_HALF_LIFE_H = 6.0
TRENDING_CAP = 1000
GENRE_SEPARATOR = "|"
ONLINE_EVAL_TTL_S = 14 * 24 * 3600  # two weeks of hourly counters: any rollout fits
# Fine buckets let the controller count exactly the responses served during a step.
ONLINE_EVAL_BUCKET_S = 10
ONLINE_EVAL_BUCKET_TTL_S = 3 * 24 * 3600
ONLINE_EVAL_MAX_POSITION = 20  # positions past this share the last bucket
ONLINE_EVAL_METRICS = ("served", "converted")
# Re-sent event ids are recognised within this many offsets of their partition (configurable:
# STREAMREC_STREAM_DEDUPE_WINDOW); memory: up to 2x this many ids per partition.
DEDUPE_WINDOW = 100_000
DEDUPE_TTL_S = 7 * 24 * 3600  # and within this time


def online_eval_field(model: str, version: str | int, variant: str, metric: str) -> str:
    """Field of an ``oe:h`` hash; ``metric`` is ``served``, ``converted`` or ``pos:{n}``."""
    return f"{model}|{version}|{variant}|{metric}"


def parse_online_eval_field(field: str) -> tuple[str, str, str, str] | None:
    """``(model, version, variant, metric)`` of an ``oe:h`` field (None if malformed)."""
    parts = field.rsplit("|", 3)
    return (parts[0], parts[1], parts[2], parts[3]) if len(parts) == 4 else None


@dataclass(frozen=True)
class RedisKeys:
    """Key names under ``prefix``. ``partitions`` is the event topics' partition count
    (``STREAMREC_TOPIC_PARTITIONS``): readers need it to find a user's slot and to sum the
    per-partition counters. Per-partition keys come from :meth:`slot` (writers, who know the
    partition) or :meth:`user_slot` (readers, who know the user)."""

    prefix: str = "sr"
    partitions: int = 4

    def __post_init__(self) -> None:
        # A brace in the prefix would become (or break) the hash tag of every key; the only
        # braces allowed are the partition tag that slot() appends.
        base = self.prefix.split(":{", 1)[0]
        if not base or "{" in base or "}" in base:
            raise ValueError(f"redis key prefix {self.prefix!r} must be non-empty, without braces")
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")

    def slot(self, partition: int) -> RedisKeys:
        """The keys of Kafka partition number ``partition``: one hash slot."""
        return RedisKeys(f"{self.base.prefix}:{{p{partition}}}", self.partitions)

    def user_slot(self, user: str) -> RedisKeys:
        """The keys of the partition that holds ``user``'s state."""
        return self.slot(partition_of(user, self.partitions))

    def all_slots(self) -> list[RedisKeys]:
        """Every partition's keys: readers sum per-partition counters over these."""
        return [self.slot(p) for p in range(self.partitions)]

    @property
    def base(self) -> RedisKeys:
        """The untagged keys (trending, catalog, serving's dedupe) of this layout."""
        if ":{" not in self.prefix:
            return self
        return RedisKeys(self.prefix.split(":{", 1)[0], self.partitions)

    def user_recent(self, user: str) -> str:
        return f"{self.prefix}:user:{user}:recent"

    def user_ratings(self, user: str) -> str:
        return f"{self.prefix}:user:{user}:ratings"

    def user_stats(self, user: str) -> str:
        return f"{self.prefix}:user:{user}:stats"

    def user_genres(self, user: str) -> str:
        return f"{self.prefix}:user:{user}:genres"

    def item_stats(self, item: str) -> str:
        return f"{self.prefix}:item:{item}:stats"

    def pop_hour(self, epoch: float) -> str:
        return f"{self.prefix}:pop:h:{datetime.fromtimestamp(epoch, UTC):%Y%m%d%H}"

    def pop_day(self, epoch: float) -> str:
        return f"{self.prefix}:pop:d:{datetime.fromtimestamp(epoch, UTC):%Y%m%d}"

    @property
    def pop_all(self) -> str:
        return f"{self.prefix}:pop:all"

    @property
    def trending(self) -> str:
        return f"{self.prefix}:trending"

    def catalog(self, item: str) -> str:
        return f"{self.prefix}:catalog:{item}"

    def watermark(self, topic: str, partition: int) -> str:
        return f"{self.prefix}:wm:{topic}:{partition}"

    def online_eval_hour(self, epoch: float) -> str:
        return f"{self.prefix}:oe:h:{datetime.fromtimestamp(epoch, UTC):%Y%m%d%H}"

    def online_eval_bucket(self, epoch: float) -> str:
        start = int(epoch // ONLINE_EVAL_BUCKET_S * ONLINE_EVAL_BUCKET_S)
        return f"{self.prefix}:oe:b:{start}"

    def online_eval_pending(self, user: str) -> str:
        return f"{self.prefix}:oe:pending:{user}"

    def online_eval_watermark(self, topic: str, partition: int) -> str:
        return f"{self.prefix}:oe:wm:{topic}:{partition}"

    def feedback_dedup(self, event_id: str) -> str:
        """Serving's idempotency key of a feedback event id."""
        return f"{self.prefix}:serving:feedback:{event_id}"

    def seen_ids(self, topic: str, partition: int, bucket: int) -> str:
        """The stream processor's event ids of one bucket of offsets of a partition."""
        return f"{self.prefix}:seen:{topic}:{partition}:{bucket}"
