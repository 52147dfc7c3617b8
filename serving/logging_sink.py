"""Logs every served recommendation to ``<prefix>.reco_requests`` / ``<prefix>.reco_responses``
without ever making the response wait: ``EventProducer.try_send`` only enqueues, and a full
queue drops the event and counts it (a stalled broker must not stall the API)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import orjson

from core.config import KafkaSettings
from core.errors import DeliveryFailed, KafkaError
from core.kafka import EventProducer
from schemas.errors import StreamrecError
from schemas.events import Event, FeedbackEvent, RecoRequestEvent, RecoResponseEvent
from serving.metrics import ServingMetrics
from serving.recommendation import Recommendation

log = logging.getLogger(__name__)

_WARN_EVERY_S = 30.0
RECO_REQUEST = RecoRequestEvent.model_fields["event_type"].default
RECO_RESPONSE = RecoResponseEvent.model_fields["event_type"].default


def request_payloads(reco: Recommendation, *, status: int, ts: datetime) -> tuple[bytes, bytes]:
    """The wire bytes of the request and response events of ``reco``, exactly what
    ``encode_event`` makes of the pydantic events (fields in declaration order, ``None``
    left out, UTC as ``Z``) for a fraction of the cost: every field was validated on the way
    in (user id, k) or comes from the model's own item ids, and this runs on every request."""
    request_id, user_id = reco.request_id, reco.user_id
    head = {"schema_version": 1, "event_id": f"{request_id}.q", "user_id": user_id, "ts": ts}
    request = {**head, "event_type": RECO_REQUEST, "request_id": request_id, "k": reco.k}
    response = {
        **head,
        "event_id": f"{request_id}.r",
        "event_type": RECO_RESPONSE,
        "request_id": request_id,
        "items": reco.items,
        "model_name": reco.model_name,
        "model_version": reco.version_label,
        "variant": reco.variant,
    }
    if reco.fallback_reason is not None:
        response["fallback_reason"] = reco.fallback_reason
    response["latency_ms"] = reco.latency_ms
    response["status"] = status
    return orjson.dumps(request, option=orjson.OPT_UTC_Z), orjson.dumps(
        response, option=orjson.OPT_UTC_Z
    )


class EventSink:
    def __init__(
        self,
        kafka: KafkaSettings,
        queue_max: int,
        metrics: ServingMetrics,
        linger_ms: float = 500.0,
    ) -> None:
        """Logs to ``kafka``'s topics; ``queue_max``: messages held before a log is dropped
        (``serve.log_queue_max``); ``linger_ms``: ``serve.log_linger_ms``."""
        self.metrics = metrics
        self._topics = {
            RecoRequestEvent.TOPIC: kafka.topic(RecoRequestEvent.TOPIC),
            RecoResponseEvent.TOPIC: kafka.topic(RecoResponseEvent.TOPIC),
        }
        self._last_warning = 0.0
        self.producer = EventProducer(
            kafka,
            **{
                "queue.buffering.max.messages": queue_max,
                # Logs are worth less than latency: give up on them sooner than batch jobs do.
                "message.timeout.ms": 10_000,
                # Fewer, larger produce requests: the broker shares our cores.
                "linger.ms": linger_ms,
            },
        )

    def _send(self, event: Event) -> bool:
        try:
            # Enqueue only: delivery reports (failures only) are served by the context's
            # background poll, not on the request path.
            ok = self.producer.send(event, block=False)
        except StreamrecError as err:
            ok = False
            self._warn(f"cannot log {event.TOPIC}: {err}")
        if not ok:
            self.metrics.log_dropped.labels(event.TOPIC).inc()
            self._warn(f"{event.TOPIC}: producer queue full, event dropped")
        return ok

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > _WARN_EVERY_S:  # one line per burst, not per request
            self._last_warning = now
            log.warning(message)

    def log_recommendation(self, reco: Recommendation, status: int = 200) -> None:
        request, response = request_payloads(reco, status=status, ts=datetime.now(UTC))
        key = reco.user_id.encode()  # Event.key: a user's events stay in one partition
        self._produce(RecoRequestEvent.TOPIC, request, key)
        self._produce(RecoResponseEvent.TOPIC, response, key)

    def _produce(self, topic: str, value: bytes, key: bytes) -> None:
        try:
            ok = self.producer.produce(self._topics[topic], value, key, block=False)
        except KafkaError as err:
            ok = False
            self._warn(f"cannot log {topic}: {err}")
        if not ok:
            self.metrics.log_dropped.labels(topic).inc()
            self._warn(f"{topic}: producer queue full, event dropped")

    def send_feedback(self, event: FeedbackEvent) -> bool:
        return self._send(event)

    def poll(self) -> None:
        self.producer.poll(0)

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.producer.flush(timeout)
        except DeliveryFailed as err:
            log.warning("request logs not delivered at shutdown: %s", err)
