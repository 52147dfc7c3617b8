"""Model calls of concurrent requests, gathered and made together on the compute thread.

A request's model call used to be its own trip to the compute pool: a hand-off there and
one back per request, and one model call per request, each paying numpy's and the compiled
ranker's per-call overhead. Here the calls that arrive while a batch is in flight wait for
it and go together as the next batch: one hand-off each way per batch, and one
``recommend_unseen_batch`` per model (``models.two_stage_batch`` ranks a batch in one pass).
Nothing waits on purpose: a call arriving while nothing is in flight goes at the end of the
current event-loop iteration (so the calls that reached this point in the same iteration go
with it), and a batch is as large as the traffic makes it, up to ``max_batch``.

The budget still cuts a call off: its request stops waiting at its deadline (``timeout``
fallback), and a batch leaves out the calls whose deadline has passed before it starts, so
an overloaded worker does not spend its CPU on answers nobody waits for."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from models.base import ModelCall, Recommender
from serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

Scored = list[tuple[str, float]]


@dataclass(slots=True)
class _Pending:
    model: Any  # a models.base.Recommender
    call: ModelCall
    future: asyncio.Future[Scored]
    deadline: float  # time.perf_counter() past which nobody waits for the answer


class ModelBatcher:
    """One batch in flight per worker at a time (the GIL makes a second one no faster)."""

    def __init__(
        self,
        executor: Executor,
        *,
        max_batch: int = 32,
        inline: bool = False,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.executor = executor
        self.max_batch = max(1, max_batch)
        # Batches made on the event loop itself: no hand-off at all, and the requests that
        # arrive meanwhile wait in their sockets and form the next batch; but a batch
        # once started is not cut off at the budget.
        self.inline = inline
        self.metrics = metrics
        self._pending: list[_Pending] = []
        self._busy = False  # a batch is in flight, or its dispatch is scheduled

    async def call(self, model: Any, call: ModelCall, timeout_s: float) -> Scored:
        """``model.recommend_unseen(...)`` of ``call``, made in a batch; TimeoutError after
        ``timeout_s``; the model's own exception if its call fails."""
        if timeout_s <= 0:
            raise TimeoutError
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Scored] = loop.create_future()
        self._pending.append(_Pending(model, call, future, time.perf_counter() + timeout_s))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._dispatch, loop)
        async with asyncio.timeout(timeout_s):
            return await future

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        batch = [p for p in batch if not p.future.done()]  # given up on while queued
        if not batch:
            self._busy = False
            if self._pending:
                self._busy = True
                loop.call_soon(self._dispatch, loop)
            return
        if self.metrics is not None:
            self.metrics.model_batches.inc()
            self.metrics.model_batch_calls.inc(len(batch))
        if self.inline:
            self._finish(batch, _answers(batch))
            return
        try:
            self.executor.submit(self._run, loop, batch)
        except RuntimeError as err:  # the executor is shut down: the worker is stopping
            self._finish(batch, [err] * len(batch))

    def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        """On the compute thread: the batch, answered in one hand-off back to the loop."""
        results = _answers(batch)
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(self._finish, batch, results)

    def _finish(self, batch: list[_Pending], results: Sequence[Scored | BaseException]) -> None:
        for p, got in zip(batch, results, strict=True):
            if p.future.done():  # timed out meanwhile
                continue
            if isinstance(got, BaseException):
                p.future.set_exception(got)
            else:
                p.future.set_result(got)
        if self._pending:
            self._dispatch(asyncio.get_running_loop())
        else:
            self._busy = False


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
