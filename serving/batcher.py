"""Model calls of concurrent requests, gathered and made together on the compute thread.

A request's model call used to be its own trip to the compute pool: a hand-off there and
one back per request, and one model call per request, each paying numpy's and the compiled
ranker's per-call overhead. Here the calls that arrive while a batch is in flight wait for
it and go together as the next batch: one hand-off each way per batch, and one
``recommend_unseen_batch`` per model (``models.two_stage_batch`` ranks a batch in one pass).
Nothing waits on purpose: a call arriving while nothing is in flight goes at the end of the
current event-loop iteration (so the calls that reached this point in the same iteration go
with it), and a batch is as large as the traffic makes it, up to ``max_batch``. One wait on
purpose, inline only (``hold_s``, ``STREAMREC_SERVE_MODEL_BATCH_HOLD_MS``): a batch about to
start while other requests are on their way to their model call (``arriving``: reading Redis)
waits for them, at most ``hold_s``, so that they join it.

The budget still cuts a call off: its request stops waiting at its deadline (``timeout``
fallback), and a batch leaves out the calls whose deadline has passed before it starts, so
an overloaded worker does not spend its CPU on answers nobody waits for.

``inline`` (``STREAMREC_SERVE_MODEL_INLINE``) makes the batches on the event loop instead: no
hand-off, and no contention for the GIL, which the probe (``serving.probe``) found stretching
the compute thread's batches to several times their CPU. Each of the two lanes has its own
batch in flight; a model too slow for the loop moves to the thread's lane for a while."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from models.base import ModelCall, Recommender
from serving import schedstat
from serving.metrics import ServingMetrics
from serving.probe import Probe

log = logging.getLogger(__name__)

Scored = list[tuple[str, float]]
SLOW_MODEL_S = 60.0  # how long a model too slow for the event loop is kept off it
# The smallest batch worth a wait (pending and arriving calls): the model's CPU a call at
# batch 2 is that of batch 1 (1.09 vs 1.04 ms), at 4 0.77, at 8 0.58 (bench/_model_batch_calls
# .py, issue 14), so a wait for a pair (paced half load) would only add latency.
HOLD_MIN_BATCH = 4


@dataclass(slots=True)
class _Pending:
    model: Any  # a models.base.Recommender
    call: ModelCall
    future: asyncio.Future[Scored]
    deadline: float  # time.perf_counter() past which nobody waits for the answer
    budget: float  # what the call is judged against: the request's whole budget (seconds)
    marks: dict[str, float] | None = None  # serving.probe's phase marks (dev only)


@dataclass(slots=True)
class _Lane:
    """Calls waiting for a batch, and whether one is in flight (or its dispatch scheduled)."""

    on_loop: bool
    pending: list[_Pending] = field(default_factory=list)
    busy: bool = False
    timer: asyncio.Handle | None = None  # the held dispatch's


class ModelBatcher:
    """One batch in flight per lane at a time (the GIL makes a second one no faster): the
    loop's lane (``inline``, the default) or the compute thread's."""

    def __init__(
        self,
        executor: Executor,
        *,
        max_batch: int = 32,
        inline: bool = False,
        budget_s: float | None = None,
        hold_s: float = 0.0,
        metrics: ServingMetrics | None = None,
        probe: Probe | None = None,
        before_inline: Callable[[], None] | None = None,
    ) -> None:
        """``before_inline``: called before an inline batch holds the loop (serving's Redis
        reader writes the reads queued meanwhile, so they are not held up behind it)."""
        self.before_inline = before_inline
        self.executor = executor
        # How long an inline batch may wait for the requests already on their way to it
        # (``arriving``): at max load a batch used to hold ~4 calls while the model's CPU per
        # call falls steeply with the batch's size (issue 14). 0: never waits.
        self.hold_s = hold_s
        self._arriving = 0
        self._arrival = _Arrival(self)
        # A call on the loop is judged slow against half the request's whole budget (None:
        # the time its request had left). Not the time left: under overload a request that
        # waited in line has ~1 ms left, and its ordinary 0.7 ms call in a batch of 11 moved
        # the model off the loop for a minute (the probe, wrk's max phase; issue 14).
        self.budget_s = budget_s
        self.max_batch = max(1, max_batch)
        # Batches made on the event loop itself: no hand-off and no GIL contention with
        # the loop; the requests that arrive meanwhile wait in their sockets and form the
        # next batch. A batch once started is not cut off at the budget: see _on_loop.
        self.inline = inline
        self.metrics = metrics
        self.probe = probe  # dev only: each batch's interval (serving.probe)
        self._loop_lane = _Lane(on_loop=True)
        self._thread_lane = _Lane(on_loop=False)
        # Models too slow for the loop (a call took over half its budget there) -> until
        # when (time.monotonic()) their calls go to the compute thread, which cuts them off.
        self._slow: dict[int, float] = {}
        self._schedstat: int | None = None
        # Models whose last inline batch stalled off-CPU past half the budget -> how many
        # such batches in a row (see _too_slow).
        self._stalled: dict[int, int] = {}

    async def call(
        self, model: Any, call: ModelCall, timeout_s: float, marks: dict[str, float] | None = None
    ) -> Scored:
        """``model.recommend_unseen(...)`` of ``call``, made in a batch; TimeoutError after
        ``timeout_s``; the model's own exception if its call fails."""
        if timeout_s <= 0:
            raise TimeoutError
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Scored] = loop.create_future()
        now = time.perf_counter()
        if marks is not None:
            marks["queued"] = now
        on_loop = self.inline and not self._is_slow(model)
        lane = self._loop_lane if on_loop else self._thread_lane
        budget = self.budget_s or timeout_s
        lane.pending.append(_Pending(model, call, future, now + timeout_s, budget, marks))
        if not lane.busy:
            lane.busy = True
            loop.call_soon(self._dispatch, loop, lane)
        elif lane.timer is not None and len(lane.pending) >= self.max_batch:
            self._release(loop, lane)
        # A timer on the future, not asyncio.timeout: its context manager costs more than
        # the rest of the hand-off (issue 14's profile). A late answer finds it done.
        timer = loop.call_later(timeout_s, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def arriving(self) -> _Arrival:
        """Around a request's way to its model call (its Redis read, its model's lookup): an
        inline batch about to start waits up to ``hold_s`` for such requests to join it. The
        call is to be made right after the block, in the same step of the request's task."""
        return self._arrival

    def _arrived(self) -> None:
        self._arriving -= 1
        if not self._arriving and self._loop_lane.timer is not None:
            # All arrived: the held batch goes once this task's step has made its call.
            self._release(asyncio.get_running_loop(), self._loop_lane)

    def _hold(self, loop: asyncio.AbstractEventLoop, lane: _Lane) -> bool:
        """Whether the lane's batch waits (a timer set) for the requests on their way to
        it. Only while some are (with none, a call goes at once: latency at low load is
        unchanged), they would make it ``HOLD_MIN_BATCH`` calls at least, it is not full,
        and for ``hold_s`` at most."""
        if not lane.on_loop or self.hold_s <= 0 or not self._arriving:
            return False
        if len(lane.pending) + self._arriving < HOLD_MIN_BATCH:
            return False
        if len(lane.pending) >= self.max_batch:
            return False
        # One hold per batch: the timer's (or a release's) dispatch goes without asking again.
        lane.timer = loop.call_later(self.hold_s, self._dispatch, loop, lane)
        return True

    def _release(self, loop: asyncio.AbstractEventLoop, lane: _Lane) -> None:
        """A held batch goes now (after the callbacks already scheduled)."""
        if lane.timer is not None:
            lane.timer.cancel()
        lane.timer = loop.call_soon(self._dispatch, loop, lane)

    def _dispatch(self, loop: asyncio.AbstractEventLoop, lane: _Lane) -> None:
        released = lane.timer is not None  # a held batch's timer or release: go now
        lane.timer = None
        if not released and self._hold(loop, lane):
            return
        batch = lane.pending[: self.max_batch]
        del lane.pending[: self.max_batch]
        batch = [p for p in batch if not p.future.done()]  # given up on while queued
        if not batch:
            lane.busy = False
            if lane.pending:
                lane.busy = True
                loop.call_soon(self._dispatch, loop, lane)
            return
        if self.metrics is not None:
            self.metrics.model_batches.inc()
            self.metrics.model_batch_calls.inc(len(batch))
        if lane.on_loop:
            if self.before_inline is not None:
                self.before_inline()
            self._finish(lane, batch, self._on_loop(batch))
            return
        try:
            self.executor.submit(self._run, loop, lane, batch)
        except RuntimeError as err:  # the executor is shut down: the worker is stopping
            self._finish(lane, batch, [err] * len(batch))

    def _run(self, loop: asyncio.AbstractEventLoop, lane: _Lane, batch: list[_Pending]) -> None:
        """On the compute thread: the batch, answered in one hand-off back to the loop."""
        results = self._timed_answers(batch, "batch")
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(self._finish, lane, batch, results)

    def _is_slow(self, model: Any) -> bool:
        until = self._slow.get(id(model))
        if until is not None and time.monotonic() >= until:
            del self._slow[id(model)]  # given another chance on the loop
            return False
        return until is not None

    def _on_loop(self, batch: list[_Pending]) -> list[Scored | BaseException]:
        """The batch on the loop, which cannot cut a call off at the budget. When a call
        took over half its budget there (per call of the batch: a large batch under load is
        not a slow model, nor is a busy host), its model is too slow for the loop: its late
        answers are timeouts (the request falls back, as on the compute thread) and its
        calls go to the compute thread for ``SLOW_MODEL_S`` (a slow canary must not stall
        every request)."""
        # CPU from the thread's clock: schedstat's count is updated only at ticks and
        # context switches.
        start, cpu, queued = time.perf_counter(), time.thread_time(), self._run_queue()
        results = self._timed_answers(batch, "batch_inline")
        end, cpu_s, runq_s = (
            time.perf_counter(),
            time.thread_time() - cpu,
            self._run_queue() - queued,
        )
        # Less the time the loop's thread waited for a core: a busy host is not a slow model.
        per_call = (end - start - runq_s) / len(batch)
        cpu_per_call = cpu_s / len(batch)
        if self.probe is not None and per_call > min(p.budget for p in batch) / 2:
            self.probe.interval("inline_over_half_budget", start, len(batch), cpu_s, runq_s)
        judged: set[int] = set()
        for i, p in enumerate(batch):
            if per_call <= p.budget / 2:
                self._stalled.pop(id(p.model), None)
                continue
            if end > p.deadline:
                results[i] = TimeoutError()
            if id(p.model) in judged or id(p.model) in self._slow:
                continue
            judged.add(id(p.model))
            if self._too_slow(p, cpu_per_call):
                self._slow[id(p.model)] = time.monotonic() + SLOW_MODEL_S
                if self.probe is not None:
                    self.probe.interval("demoted", start, len(batch), cpu_s, runq_s)
                log.warning(
                    "a model call took %.0f ms on the event loop (%.0f ms of its CPU): %s's "
                    "calls go to the compute thread for %.0f s",
                    per_call * 1000,
                    cpu_per_call * 1000,
                    type(p.model).__name__,
                    SLOW_MODEL_S,
                )
        return results

    def _run_queue(self) -> float:
        if self._schedstat is None:  # the loop's thread's, opened once (a read is ~5 µs)
            self._schedstat = schedstat.open_thread()
        return schedstat.read(self._schedstat)[1]

    def _too_slow(self, p: _Pending, cpu_per_call: float) -> bool:
        """Whether a call over half its budget on the loop makes its model too slow for it:
        its own CPU was (the model is slow), or its calls stalled off-CPU twice in a row (a
        model that blocks, e.g. on I/O). A single off-CPU stall is not the model's: the
        loop's thread also sleeps while another thread holds the GIL or a page is read in,
        and under overload (wrk's max phase) one such stall used to keep a fast model off
        the loop for the next minute."""
        if cpu_per_call > p.budget / 2:
            return True
        stalls = self._stalled[id(p.model)] = self._stalled.get(id(p.model), 0) + 1
        return stalls >= 2

    def _timed_answers(self, batch: list[_Pending], name: str) -> list[Scored | BaseException]:
        if self.probe is None:
            return _answers(batch)
        start, cpu, runq = time.perf_counter(), time.thread_time(), self.probe.run_queue()
        for p in batch:
            if p.marks is not None:
                p.marks["batch_start"] = start
        results = _answers(batch)
        cpu_s, runq_s = time.thread_time() - cpu, self.probe.run_queue() - runq
        self.probe.interval(name, start, len(batch), cpu_s, runq_s)
        end = time.perf_counter()
        for p in batch:
            if p.marks is not None:
                p.marks["batch_end"] = end
        return results

    def _finish(
        self, lane: _Lane, batch: list[_Pending], results: Sequence[Scored | BaseException]
    ) -> None:
        """Answers ``batch`` on the loop; the lane's calls that arrived meanwhile go next."""
        for p, got in zip(batch, results, strict=True):
            if p.marks is not None:
                p.marks["delivered"] = time.perf_counter()
            if p.future.done():  # timed out meanwhile
                continue
            if isinstance(got, BaseException):
                p.future.set_exception(got)
            else:
                p.future.set_result(got)
        if lane.pending:
            self._dispatch(asyncio.get_running_loop(), lane)
        else:
            lane.busy = False


class _Arrival:
    """:meth:`ModelBatcher.arriving`'s context manager: a class, not a generator, since
    every request enters it (a generator-based one costs a few microseconds more)."""

    __slots__ = ("_batcher",)

    def __init__(self, batcher: ModelBatcher) -> None:
        self._batcher = batcher

    def __enter__(self) -> None:
        self._batcher._arriving += 1

    def __exit__(self, *exc: object) -> None:
        self._batcher._arrived()


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _answers(batch: list[_Pending]) -> list[Scored | BaseException]:
    """The batch's calls, grouped by model; a call whose deadline passed is not made."""
    results: list[Scored | BaseException] = [TimeoutError()] * len(batch)
    now = time.perf_counter()
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(batch):
        if p.deadline > now:  # past it, the request has fallen back already
            groups.setdefault(id(p.model), []).append(i)
    for idx in groups.values():
        model = batch[idx[0]].model
        for i, got in zip(idx, _calls(model, [batch[i].call for i in idx]), strict=True):
            results[i] = got
    return results


def _calls(model: Any, calls: list[ModelCall]) -> list[Scored | BaseException]:
    """The batch call, or each call alone when it fails, so one bad call fails alone."""
    try:
        got: list[Scored | BaseException] = list(model.recommend_unseen_batch(calls))
        if len(got) == len(calls):
            return got
        log.warning("a batch of %d calls returned %d answers", len(calls), len(got))
    except Exception as err:
        if len(calls) == 1:
            return [err]
    out: list[Scored | BaseException] = []
    for c in calls:
        try:
            # The contract's default batch (one recommend_unseen per call), one call at a
            # time, whatever the model's own batch does.
            out.append(Recommender.recommend_unseen_batch(model, [c])[0])
        except Exception as err:
            out.append(err)
    return out
