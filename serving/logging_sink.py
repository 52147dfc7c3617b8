"""Logs every served recommendation to ``<prefix>.reco_requests`` / ``<prefix>.reco_responses``
without ever making the response wait: ``EventProducer.try_send`` only enqueues, and a full
queue drops the event and counts it (a stalled broker must not stall the API)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from core.config import Settings
from core.errors import DeliveryFailed
from core.kafka import EventProducer
from schemas.errors import StreamrecError
from schemas.events import Event, FeedbackEvent, RecoRequestEvent, RecoResponseEvent
from serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

_WARN_EVERY_S = 30.0


class EventSink:
    def __init__(self, settings: Settings, metrics: ServingMetrics) -> None:
        self.metrics = metrics
        self._last_warning = 0.0
        self.producer = EventProducer(
            settings,
            **{
                "queue.buffering.max.messages": settings.serve_log_queue_max,
                # Logs are worth less than latency: give up on them sooner than batch jobs do.
                "message.timeout.ms": 10_000,
                "linger.ms": 50,
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

    def log_recommendation(
        self,
        *,
        request_id: str,
        user_id: str,
        k: int,
        items: list[str],
        model_name: str,
        model_version: str,
        variant: str,
        fallback_reason: str | None,
        latency_ms: float,
        status: int = 200,
    ) -> None:
        ts = datetime.now(UTC)
        # model_construct skips re-validation: every field was validated on the way in (user
        # id, k) or comes from the model's own item ids; this runs on every request.
        self._send(
            RecoRequestEvent.model_construct(
                event_id=f"{request_id}.q", request_id=request_id, user_id=user_id, k=k, ts=ts
            )
        )
        self._send(
            RecoResponseEvent.model_construct(
                event_id=f"{request_id}.r",
                request_id=request_id,
                user_id=user_id,
                items=items,
                model_name=model_name,
                model_version=model_version,
                variant=variant,
                fallback_reason=fallback_reason,
                latency_ms=latency_ms,
                status=status,
                ts=ts,
            )
        )

    def send_feedback(self, event: FeedbackEvent) -> bool:
        return self._send(event)

    def poll(self) -> None:
        self.producer.poll(0)

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.producer.flush(timeout)
        except DeliveryFailed as err:
            log.warning("request logs not delivered at shutdown: %s", err)
