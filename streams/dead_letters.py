"""The worker's dead-letter sender: each letter is fitted to a record size Kafka accepts
(:meth:`schemas.dead_letter.DeadLetter.fit`), every delivery is confirmed one by one, and
failures are told apart:

- transient (broker down, timeout): the call raises :class:`SinkUnavailable`, so the worker
  holds and retries as for any sink; the next attempt sends only the letters not delivered;
- over a size limit anyway (the topic's ``max.message.bytes`` below the configured
  ``STREAMREC_STREAM_DEAD_LETTER_MAX_BYTES``): the letter is cut to the minimum
  (:data:`schemas.dead_letter.MIN_MAX_BYTES`) and sent again at once;
- any other permanent refusal, or the minimum refused too: :class:`KafkaRejected`, which
  stops the worker with a clear error instead of holding forever. Nothing of the batch is
  committed, so a restart after the fix replays it.

Dead letters are at-least-once: a letter whose delivery report was lost is sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Producer

from core.config_infra import KafkaSettings
from core.kafka import producer_config
from schemas.dead_letter import MIN_MAX_BYTES, DeadLetter
from schemas.topics import DEAD_LETTER
from streams.errors import KafkaRejected, SinkUnavailable
from streams.kafka_errors import SIZE_CODES, is_permanent

log = logging.getLogger(__name__)

# Every letter gets its delivery report within the message timeout, so flush() never
# returns with letters whose fate is unknown (which would be sent twice).
MESSAGE_TIMEOUT_MS = 30_000
FLUSH_TIMEOUT_S = MESSAGE_TIMEOUT_MS / 1000 + 10


class DeadLetterSender:
    def __init__(self, kafka: KafkaSettings, max_bytes: int) -> None:
        """``max_bytes``: the letter budget (``STREAMREC_STREAM_DEAD_LETTER_MAX_BYTES``)."""
        self.topic = kafka.topic(DEAD_LETTER)
        self.bootstrap = kafka.bootstrap
        self.max_bytes = max_bytes
        conf = producer_config(
            kafka,
            **{
                "linger.ms": 5,
                "message.timeout.ms": MESSAGE_TIMEOUT_MS,
                # A report per letter, delivered or not: we need to know which were.
                "delivery.report.only.error": False,
                # Never refuse locally what the budget allows (librdkafka's default is 1 MB).
                "message.max.bytes": max(1_000_000, self.max_bytes + 64 * 1024),
            },
        )
        self._producer = Producer(conf, error_cb=lambda err: log.warning("kafka: %s", err))

    def sender(self, letters: Sequence[DeadLetter]) -> Callable[[], None]:
        """A call that delivers ``letters`` (pass it to the worker's retry): each call
        sends the letters still undelivered."""
        pending = list(letters)

        def attempt() -> None:
            nonlocal pending
            pending, err = self._attempt(pending)
            if pending:
                raise SinkUnavailable("kafka", self.bootstrap, KafkaException(err))

        return attempt

    def _attempt(self, letters: list[DeadLetter]) -> tuple[list[DeadLetter], KafkaError | None]:
        """Send ``letters``; returns those to send again (transient failures) and the
        first transient error. Raises KafkaRejected on a permanent one."""
        fitted = [d.fit(self.max_bytes) for d in letters]
        for d in fitted:
            if d.truncated:
                log.info(
                    "dead letter of %s[%d]@%d cut to fit (%s; value was %s bytes)",
                    d.source_topic,
                    d.source_partition,
                    d.source_offset,
                    ",".join(d.truncated),
                    d.value_size,
                )
        left: list[DeadLetter] = []
        first: KafkaError | None = None
        smaller: list[DeadLetter] = []
        for orig, d, err in zip(letters, fitted, self._deliver(fitted), strict=True):
            if err is None:
                continue
            if not is_permanent(err):
                left.append(orig)
                first = first or err
            elif err.code() in SIZE_CODES and self.max_bytes > MIN_MAX_BYTES:
                log.warning(
                    "%s refused a %d-byte dead letter (%s): sending it cut to %d bytes; raise "
                    "the topic's max.message.bytes to keep more of such records",
                    self.topic,
                    len(d.value or b""),
                    err.name(),
                    MIN_MAX_BYTES,
                )
                smaller.append(orig)
            else:
                raise self._rejected(d, err)
        if smaller:
            minimal = [d.fit(MIN_MAX_BYTES) for d in smaller]
            for orig, d, err in zip(smaller, minimal, self._deliver(minimal), strict=True):
                if err is None:
                    continue
                if is_permanent(err):
                    raise self._rejected(d, err)
                left.append(orig)
                first = first or err
        return left, first

    def _deliver(self, letters: Sequence[DeadLetter]) -> list[KafkaError | None]:
        """Produce ``letters`` and wait for their delivery reports: the error of each
        (None: delivered)."""
        errors: list[KafkaError | None] = [None] * len(letters)
        reported = [False] * len(letters)

        def report(i: int) -> Callable[[KafkaError | None, object], None]:
            def cb(err: KafkaError | None, _msg: object) -> None:
                errors[i], reported[i] = err, True

            return cb

        for i, d in enumerate(letters):
            while True:
                try:
                    self._producer.produce(
                        self.topic, d.value, d.key, headers=d.headers(), on_delivery=report(i)
                    )
                    break
                except BufferError:
                    self._producer.poll(0.05)  # queue full: let deliveries drain it
                except KafkaException as err:  # refused locally (size, closed, ...)
                    errors[i], reported[i] = err.args[0], True
                    break
        self._producer.flush(FLUSH_TIMEOUT_S)
        for i, done in enumerate(reported):
            if not done:
                errors[i] = KafkaError(KafkaError._MSG_TIMED_OUT, "no delivery report")
        return errors

    def _rejected(self, d: DeadLetter, err: KafkaError) -> KafkaRejected:
        return KafkaRejected(
            f"the dead letter of {d.source_topic}[{d.source_partition}]@{d.source_offset} "
            f"({len(d.value or b'')} bytes) on {self.topic}",
            f"{err.name()}: {err.str()}",
            "the worker stops without committing that offset; fix the topic's limits or "
            "permissions and restart",
        )

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
