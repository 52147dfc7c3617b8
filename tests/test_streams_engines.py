"""The two stream engines never share a consumer group: the broker refuses a worker of the
other engine (different group protocols) and that worker stops with one clear error."""

from __future__ import annotations

import threading
import time

import pytest

from core.config import Settings
from streams.app import create_app
from streams.errors import EngineConflict
from streams.parts import Worker

pytestmark = pytest.mark.integration


def _start(s: Settings, engine: str) -> tuple[Worker, threading.Thread, list[BaseException]]:
    worker = create_app(s, engine=engine)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return worker, thread, errors


@pytest.mark.parametrize(("first", "second"), [("confluent", "faust"), ("faust", "confluent")])
def test_a_worker_of_the_other_engine_is_refused(topics: Settings, first: str, second: str):
    owner, owner_thread, owner_errors = _start(topics, first)
    try:
        deadline = time.monotonic() + 60
        while owner.progress.assigned == 0:
            assert time.monotonic() < deadline and not owner_errors, owner_errors
            time.sleep(0.05)
        newcomer, thread, errors = _start(topics, second)
        thread.join(60)
        if thread.is_alive():
            newcomer.stop()
        assert len(errors) == 1 and isinstance(errors[0], EngineConflict), errors
        message = str(errors[0])
        assert "\n" not in message and f"workers of the {first} engine" in message
        assert owner.progress.assigned == 20 and not owner_errors  # the owner keeps them all
    finally:
        owner.stop()
        owner_thread.join(30)
