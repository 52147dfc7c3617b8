"""Online evaluation: each ``reco_responses`` event joined with the same user's later watch
events within an event-time window, counted per model / version / variant / hour.

For every response: ``served`` += 1; it **converts** (``converted`` += 1, ``pos:{n}`` += 1
for the 1-based position ``n`` of the watched item) when the user watches (or rates) one of
its items at an event time in ``[response ts, response ts + window]``. A response converts
at most once (a watch converts every response of its window that recommended the item).
Counters are attributed to the response's serve time and live in Redis hashes per
event-time hour, and per 10-second bucket for the rollout controller's per-step cohorts
(layout in :mod:`schemas.redis_keys`); the worker exports them as Prometheus counters.

Why the join state lives in Redis, not in the worker's memory: the two topics' partitions of
one user (same key, same partition number) are not guaranteed to be consumed by the same
worker (the group's assignment is round-robin over all topics), and the state must survive
restarts without double counting. So one Lua script per micro-batch applies the join
atomically with its own per-partition watermark ``{p}:oe:wm:{topic}:{partition}`` (events
at or below it are skipped: a re-delivered offset is never counted twice), a separate
idempotent mechanism beside the features' watermark. It runs after the same batch's
features (and before its offsets can be committed; the next batch's features may be applied
before or while it runs, which is the same as a later batch arriving first), which makes the
join exact in either arrival order:

* a response looks its items up in the user's ``recent`` ZSET (item -> last watch/rate
  time, written by the features of earlier or the same batches): a watch already there in
  the window converts it at once and the response is not kept;
* otherwise it waits in ``{p}:oe:pending:{user}`` (capped, pruned by event time, TTL
  window + 1 h); a later watch of one of its items converts it and removes it.

A response is thus converted by whichever of the pair is applied second, and exactly once.
Limits (documented): ``recent`` keeps the *last* time of an item, so a re-watch after the
window hides an in-window watch of the same item that arrives after its response (or in
its batch, when the re-watch comes in the next one: applied before the response is joined);
pending responses beyond the cap are dropped oldest first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import orjson
from prometheus_client import CollectorRegistry

from core.config import OnlineEvalSettings
from schemas import redis_keys as rk
from schemas.events import Event, RecoResponseEvent
from schemas.redis_keys import RedisKeys
from streams.online_eval_metrics import OnlineEvalMetrics
from streams.redis_slots import SlotRunner

if TYPE_CHECKING:
    from streams.fast_decode import EventRecord
    from streams.redis_apply import RedisWork

log = logging.getLogger(__name__)

JOIN_LUA = """
local call = redis.call
local doc = cjson.decode(ARGV[1])  -- KEYS[1]: the first watermark (names the slot)
local window, cap, ttl_p, maxpos = doc.window, doc.cap, doc.ttl_p, doc.maxpos
local ttl_c, ttl_b = doc.ttl_c, doc.ttl_b
local wms, tops, out = {}, {}, {}
for j, k in ipairs(doc.wm) do wms[j] = tonumber(call('GET', k) or '-1'); tops[j] = wms[j] end
local function bump(hk, bk, label, metric)
  local f = label .. '|' .. metric
  call('HINCRBY', hk, f, 1)
  call('EXPIRE', hk, ttl_c)
  call('HINCRBY', bk, f, 1)
  call('EXPIRE', bk, ttl_b)
  out[#out + 1] = label
  out[#out + 1] = metric
end
local function convert(hk, bk, label, pos)
  bump(hk, bk, label, 'converted')
  bump(hk, bk, label, 'pos:' .. math.min(pos, maxpos))
end
for _, e in ipairs(doc.e) do
  local tp, off = e[1], e[2]
  if off > wms[tp] then
    if off > tops[tp] then tops[tp] = off end
    if e[3] == 'r' then
      local pk, recent, rid, ts, label = e[4], e[5], e[6], e[7], e[8]
      local hk, bk, items = e[9], e[10], e[11]
      bump(hk, bk, label, 'served')
      local pos = 0
      local scores = call('ZMSCORE', recent, unpack(items))
      for j, s in ipairs(scores) do
        if s then
          local t = tonumber(s)
          if t >= ts and t <= ts + window then pos = j break end
        end
      end
      if pos > 0 then
        convert(hk, bk, label, pos)
      else
        call('HSET', pk, rid, cjson.encode({ts, label, hk, items, bk}))
        local all = call('HGETALL', pk)
        local live = {}
        for j = 1, #all, 2 do
          local t = cjson.decode(all[j + 1])[1]
          if t + window < ts then call('HDEL', pk, all[j]) else live[#live + 1] = {t, all[j]} end
        end
        if #live > cap then
          table.sort(live, function(a, b) return a[1] < b[1] end)
          for j = 1, #live - cap do call('HDEL', pk, live[j][2]) end
        end
        call('EXPIRE', pk, ttl_p)
      end
    else
      -- a user's watches {item, ts, offset, ...} in offset order: each converts the
      -- pending responses of its window that recommended it and are not converted yet
      local pk, ws = e[4], e[5]
      local all = call('HGETALL', pk)
      local pend = {}
      for j = 1, #all, 2 do pend[#pend + 1] = {all[j], cjson.decode(all[j + 1])} end
      for k = 1, #ws, 3 do
        local item, ts = ws[k], ws[k + 1]
        if ws[k + 2] > wms[tp] then
          for _, q in ipairs(pend) do
            local p = q[2]
            if not q[3] and ts >= p[1] and ts <= p[1] + window then
              for n, it in ipairs(p[4]) do
                if it == item then
                  convert(p[3], p[5], p[2], n)
                  call('HDEL', pk, q[1])
                  q[3] = true
                  break
                end
              end
            end
          end
        end
      end
    end
  end
end
for j, k in ipairs(doc.wm) do
  if tops[j] > wms[j] then call('SET', k, string.format('%d', tops[j])) end
end
return out
"""


JOINED = frozenset({"reco_response", "watch"})  # event types the join reads


def response_label(event: RecoResponseEvent) -> str:
    """``model|version|variant``: the dimensions the counters are kept by."""
    return f"{event.model_name}|{event.model_version}|{event.variant}"


@dataclass
class JoinBatch:
    """One micro-batch's responses and watches, in offset order per partition."""

    watermarks: list[str] = field(default_factory=list)  # oe watermark key per partition
    entries: list[list] = field(default_factory=list)
    _tp: dict[tuple[str, int], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)


def add_events(
    batch: JoinBatch,
    keys: RedisKeys,
    topic: str,
    partition: int,
    events: Sequence[Event | EventRecord],
    offsets: Sequence[int],
) -> int:
    """Append a partition's responses (with items) and watches to ``batch``; other events
    are ignored. Returns how many were added. Pure."""
    n = 0
    tp = batch._tp.get((topic, partition))
    # One entry per user for the partition's watches (the script reads the user's pending
    # responses once for all of them): [tp, last offset, "w", pending key, [item, ts,
    # offset, ...]].
    watches: dict[str, list] = {}
    for event, off in zip(events, offsets, strict=True):
        is_watch = event.event_type == "watch"
        if is_watch:
            group = watches.get(event.user_id)
            if group is not None:
                group[1] = off
                # A watch is a WatchEvent or the fast path's EventRecord, both with an
                # item_id; narrowing by isinstance would cost this loop a call per event.
                group[4].extend((event.item_id, event.epoch, off))  # type: ignore[union-attr]
                n += 1
                continue
        elif not isinstance(event, RecoResponseEvent) or not event.items:
            continue  # not joined, or nothing recommended: nothing to convert or count
        if tp is None:
            batch.watermarks.append(keys.online_eval_watermark(topic, partition))
            tp = batch._tp[(topic, partition)] = len(batch.watermarks)  # 1-based, as in Lua
        if is_watch:
            pk = keys.online_eval_pending(event.user_id)
            item = event.item_id  # type: ignore[union-attr]  # a watch: see above
            entry = watches[event.user_id] = [tp, off, "w", pk, [item, event.epoch, off]]
        else:
            resp = cast(RecoResponseEvent, event)  # checked above, before the is_watch flag
            user, ts = resp.user_id, resp.epoch
            entry = [tp, off, "r", keys.online_eval_pending(user), keys.user_recent(user)]
            entry += [resp.request_id, ts, response_label(resp), keys.online_eval_hour(ts)]
            entry += [keys.online_eval_bucket(ts), list(resp.items)]
        batch.entries.append(entry)
        n += 1
    return n


def payload(
    batch: JoinBatch, *, window_s: float, cap: int, max_position: int = rk.ONLINE_EVAL_MAX_POSITION
) -> bytes:
    return orjson.dumps(
        {
            "window": window_s,
            "cap": cap,
            "ttl_c": rk.ONLINE_EVAL_TTL_S,
            "ttl_b": rk.ONLINE_EVAL_BUCKET_TTL_S,
            "ttl_p": int(window_s) + 3600,
            "maxpos": max_position,
            "wm": batch.watermarks,
            "e": batch.entries,
        }
    )


def count_applied(reply: Sequence) -> dict[tuple[str, str], int]:
    """The script's reply (label, metric, label, metric, ...) -> counts. Pure."""
    out: dict[tuple[str, str], int] = {}
    for j in range(0, len(reply) - 1, 2):
        label, metric = reply[j], reply[j + 1]
        label = label.decode() if isinstance(label, bytes) else label
        metric = metric.decode() if isinstance(metric, bytes) else metric
        out[(label, metric)] = out.get((label, metric), 0) + 1
    return out


class OnlineEval:
    """Collects each micro-batch's responses and watches (:meth:`add`) and applies them
    (:meth:`apply`) once the batch's features are in Redis: one script call per partition
    number, on that partition's slot (:mod:`schemas.redis_keys`)."""

    def __init__(
        self,
        slots: SlotRunner | None,  # None disables (sinks without Redis, in tests)
        keys: RedisKeys,
        *,
        window_s: float,
        cap: int,
        metrics: OnlineEvalMetrics | None = None,
    ) -> None:
        self.keys, self.window_s, self.cap, self.metrics = keys.base, window_s, cap, metrics
        self.slots = slots
        self.enabled = slots is not None
        self._batches: dict[int, JoinBatch] = {}

    @classmethod
    def from_settings(
        cls,
        settings: OnlineEvalSettings,
        keys: RedisKeys,
        sink: object,
        registry: CollectorRegistry | None = None,
    ) -> OnlineEval:
        """For the processor's Redis keys and sink (its ``slots``) and the worker's registry."""
        return cls(
            getattr(sink, "slots", None),
            keys,
            window_s=settings.window_s,
            cap=settings.pending_cap,
            metrics=OnlineEvalMetrics.of(registry) if registry is not None else None,
        )

    @property
    def pending(self) -> int:
        return sum(len(b) for b in self._batches.values())

    def add(
        self,
        topic: str,
        partition: int,
        events: Sequence[Event | EventRecord],
        offsets: Sequence[int],
    ) -> int:
        if not self.enabled:
            return 0
        batch = self._batches.setdefault(partition, JoinBatch())
        return add_events(batch, self.keys.slot(partition), topic, partition, events, offsets)

    def add_work(self, work: Iterable[RedisWork]) -> int:
        """Add the joined topics' share of a micro-batch (the processor's per-partition
        work items: ``.st.topic/.partition/.event_type``, ``.events``, ``.offsets``)."""
        return sum(
            self.add(w.st.topic, w.st.partition, w.events, w.offsets)
            for w in work
            if w.st.event_type in JOINED
        )

    def apply(self) -> dict[tuple[str, str], int]:
        """Run the join for what was added (idempotent: safe to retry after an error; a
        partition's batch is kept until its call succeeds)."""
        counts: dict[tuple[str, str], int] = {}
        if self.slots is None:
            return counts
        # Every partition's call at once (one round trip per master); a failure leaves all
        # batches here for the retry, which the calls' watermarks make a no-op where applied.
        ready = [b for b in self._batches.values() if b.entries]
        calls = [
            (b.watermarks[0], [payload(b, window_s=self.window_s, cap=self.cap)]) for b in ready
        ]
        for reply in self.slots.run_many(JOIN_LUA, calls):
            for key, n in count_applied(reply).items():
                counts[key] = counts.get(key, 0) + n
        self._batches.clear()
        if self.metrics is not None:
            self.metrics.record(counts)
        return counts
