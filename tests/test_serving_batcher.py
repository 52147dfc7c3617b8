"""serving.batcher: the model calls of concurrent requests go to the compute thread together
(one batch in flight; calls arriving meanwhile form the next), each request gets its own
answer, a call whose deadline passes is left out, and a failing call fails alone. Pure
logic: a small model class of its own, no services."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from models.base import ModelCall
from serving.batcher import HOLD_MIN_BATCH, ModelBatcher
from serving.metrics import ServingMetrics


class Echo:
    """Answers a call with its user id; records each batch; a gate holds the first batch
    until released, so the test decides what arrives while it is in flight."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.threads: list[threading.Thread] = []
        self.gate = threading.Event()

    def recommend_unseen_batch(self, calls: list[ModelCall]) -> list[list[tuple[str, float]]]:
        self.gate.wait(5)
        self.batches.append([c.user_id for c in calls])
        self.threads.append(threading.current_thread())
        if any(c.user_id == "boom" for c in calls):
            raise ValueError("boom")
        return [[(c.user_id, float(c.k))] for c in calls]

    def recommend_unseen(self, user_id: str, k: int, **_: object) -> list[tuple[str, float]]:
        if user_id == "boom":
            raise ValueError("boom")
        return [(user_id, float(k))]


def burn_cpu(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU (not a sleep: the batcher tells the two apart)."""
    spent = time.thread_time()
    while time.thread_time() - spent < seconds:
        pass


def test_concurrent_calls_are_batched_cut_off_and_isolated() -> None:
    model = Echo()
    metrics = ServingMetrics()

    async def go():
        with ThreadPoolExecutor(2) as pool:
            batcher = ModelBatcher(pool, max_batch=8, metrics=metrics)
            first = asyncio.ensure_future(batcher.call(model, ModelCall("u0", 1), 5.0))
            await asyncio.sleep(0.05)  # the first batch is in flight, held by the gate
            late = asyncio.ensure_future(batcher.call(model, ModelCall("late", 1), 0.01))
            rest = [
                asyncio.ensure_future(batcher.call(model, ModelCall(f"u{n}", n), 5.0))
                for n in range(1, 12)
            ]
            boom = asyncio.ensure_future(batcher.call(model, ModelCall("boom", 1), 5.0))
            await asyncio.sleep(0.05)  # "late" has given up meanwhile
            model.gate.set()
            got = await asyncio.gather(first, *rest)
            errors = await asyncio.gather(late, boom, return_exceptions=True)
            return got, errors

    got, (late, boom) = asyncio.run(go())
    assert got == [[(f"u{n}", float(max(n, 1)))] for n in range(12)]
    assert isinstance(late, TimeoutError) and isinstance(boom, ValueError)
    # One alone, then the ones that arrived meanwhile, at most 8 a batch, without "late".
    assert model.batches[0] == ["u0"]
    assert all(len(b) <= 8 for b in model.batches) and len(model.batches) >= 3
    assert not any("late" in b for b in model.batches)
    assert metrics.model_batch_calls._value.get() == 13  # "late" never made
    assert metrics.model_batches._value.get() == len(model.batches)


def test_a_call_with_no_time_left_is_not_made() -> None:
    model = Echo()
    model.gate.set()

    async def go():
        with ThreadPoolExecutor(1) as pool:
            await ModelBatcher(pool).call(model, ModelCall("u", 1), 0.0)

    with pytest.raises(TimeoutError):
        asyncio.run(go())
    assert model.batches == []


def test_inline_batches_are_the_calls_of_one_loop_iteration() -> None:
    """STREAMREC_SERVE_MODEL_INLINE: no thread; the calls made before the loop comes back to
    the batcher go together, on the loop itself."""
    model = Echo()
    model.gate.set()

    async def go():
        with ThreadPoolExecutor(1) as pool:
            batcher = ModelBatcher(pool, inline=True)
            calls = [batcher.call(model, ModelCall(f"u{n}", n), 5.0) for n in range(5)]
            return await asyncio.gather(*calls)

    assert asyncio.run(go()) == [[(f"u{n}", float(n))] for n in range(5)]
    assert model.batches == [[f"u{n}" for n in range(5)]]
    assert model.threads == [threading.main_thread()]  # on the loop's own thread


def test_an_inline_batch_past_the_budget_times_out_and_moves_its_model_off_the_loop() -> None:
    """On the loop a call cannot be cut off: its late answer is a timeout all the same, and
    a model whose own CPU took over half the budget has its next calls on the compute
    thread, where the budget cuts them off."""

    class Slow(Echo):
        def recommend_unseen_batch(self, calls):
            if threading.current_thread() is threading.main_thread():
                burn_cpu(0.08)  # CPU over the 0.05 s budget
            return super().recommend_unseen_batch(calls)

    model = Slow()
    model.gate.set()

    async def go():
        with ThreadPoolExecutor(1) as pool:
            batcher = ModelBatcher(pool, inline=True)
            first = await asyncio.gather(
                batcher.call(model, ModelCall("u1", 1), 0.05), return_exceptions=True
            )
            return first, await batcher.call(model, ModelCall("u2", 2), 0.05)

    (first,), second = asyncio.run(go())
    assert isinstance(first, TimeoutError)
    assert second == [("u2", 2.0)]
    assert model.threads[0] is threading.main_thread()
    assert model.threads[1] is not threading.main_thread()


def test_one_off_cpu_stall_keeps_a_model_on_the_loop_two_in_a_row_do_not() -> None:
    """A call that stalled off-CPU once (the loop's thread asleep: another thread held the
    GIL, a page was read in; wrk's overloaded phase makes those) times out but leaves its
    model on the loop; a model that blocks on every call moves off it."""

    class Blocks(Echo):
        naps = 1  # how many of its next calls on the loop sleep past the budget

        def recommend_unseen_batch(self, calls):
            if threading.current_thread() is threading.main_thread() and self.naps:
                self.naps -= 1
                time.sleep(0.12)  # over half the 0.2 s budget, off-CPU
            return super().recommend_unseen_batch(calls)

    model = Blocks()
    model.gate.set()

    async def go():
        with ThreadPoolExecutor(1) as pool:
            batcher = ModelBatcher(pool, inline=True)
            call = batcher.call
            # A budget large enough that a loaded host's own stalls (tens of ms) do not
            # count: only the model's naps go over half of it.
            for user in ("u1", "u2"):  # one stall, then a quick call: still on the loop
                await call(model, ModelCall(user, 1), 0.2)
            model.naps = 2
            for user in ("u3", "u4"):  # two stalls in a row: off the loop
                await call(model, ModelCall(user, 1), 0.2)
            await call(model, ModelCall("u5", 1), 0.2)

    asyncio.run(go())
    main = threading.main_thread()
    assert [t is main for t in model.threads] == [True, True, True, True, False]


def test_a_call_is_judged_against_the_whole_budget_not_the_time_its_request_had_left() -> None:
    """Under overload a request reaches the model with ~1 ms of its budget left: its
    ordinary call runs past that but does not move a fast model off the loop."""

    class Ordinary(Echo):
        def recommend_unseen_batch(self, calls):
            burn_cpu(0.003)  # 3 ms of CPU: 6% of a 50 ms budget
            return super().recommend_unseen_batch(calls)

    model = Ordinary()
    model.gate.set()

    async def go():
        with ThreadPoolExecutor(1) as pool:
            batcher = ModelBatcher(pool, inline=True, budget_s=0.05)
            late = batcher.call(model, ModelCall("u1", 1), 0.001)  # 1 ms left
            await asyncio.gather(late, return_exceptions=True)
            return await batcher.call(model, ModelCall("u2", 2), 0.05)

    second = asyncio.run(go())
    assert second == [("u2", 2.0)]
    assert [t is threading.main_thread() for t in model.threads] == [True, True]


def test_an_inline_batch_waits_for_the_requests_on_their_way_and_only_for_them() -> None:
    """STREAMREC_SERVE_MODEL_BATCH_HOLD_MS: a batch about to start while requests are on
    their way (``arriving``) that would make it HOLD_MIN_BATCH calls waits for them to join;
    a full batch, or one with too few on their way, goes at once (the hold is far longer
    than the test: a wait would show)."""
    model = Echo()
    model.gate.set()

    async def go():
        with ThreadPoolExecutor(1) as pool:
            batcher = ModelBatcher(pool, inline=True, hold_s=60.0, max_batch=HOLD_MIN_BATCH)

            async def request(user: str, delay: float):
                with batcher.arriving():
                    await asyncio.sleep(delay)
                return await batcher.call(model, ModelCall(user, 1), 120.0)

            async def settled(call) -> bool:
                task = asyncio.ensure_future(call)
                for _ in range(5):
                    await asyncio.sleep(0)
                return task.done()

            await asyncio.gather(*(request(f"a{n}", 0.01 * n) for n in range(HOLD_MIN_BATCH)))
            with contextlib.ExitStack() as on_their_way:
                for _ in range(HOLD_MIN_BATCH - 1):  # on their way for ever
                    on_their_way.enter_context(batcher.arriving())
                await asyncio.gather(*(request(f"b{n}", 0) for n in range(HOLD_MIN_BATCH)))
                held = asyncio.ensure_future(batcher.call(model, ModelCall("c", 1), 120.0))
                for _ in range(5):
                    await asyncio.sleep(0)
                assert not held.done()
            for _ in range(5):  # nothing on its way any more: released at once
                await asyncio.sleep(0)
            assert held.done()
            with batcher.arriving():  # too few on their way to wait for
                assert await settled(batcher.call(model, ModelCall("d", 1), 120.0))

    asyncio.run(go())
    a, b = ([f"{u}{n}" for n in range(HOLD_MIN_BATCH)] for u in "ab")
    assert model.batches == [a, b, ["c"], ["d"]]
