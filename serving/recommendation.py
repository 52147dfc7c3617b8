"""The record of one ``/recommend`` answer: built by the pipeline, and read as is by the
route (the response body), the log sink (the request/response events) and the metrics
middleware (the latency labels), so none of them restates or re-derives its fields.

The variant the user is assigned to is decided once, by the pipeline from the alias document
it routes with, and kept here: the route and the metrics can no longer work it out from a
newer document around an alias change and disagree with what answered."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

from serving.metrics import answer_labels, assignment_labels
from serving.routing import FALLBACK

# Request ids: a random per-process prefix and a counter. uuid4 reads os.urandom on every
# call, which costs a syscall per request (~0.3 ms on some VMs).
_ID_PREFIX = f"{os.getpid():x}{int.from_bytes(os.urandom(6), 'big'):012x}"
_ids = itertools.count()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):08x}"


@dataclass(slots=True)
class Recommendation:
    """Filled in by :func:`serving.pipeline.recommend` as it decides: ``assigned`` (the
    (variant, version) the user is routed to, None without a production model) first, the
    answer last (``done``). A request that fails in between still carries its assignment,
    so its 5xx counts for the variant the user was assigned to."""

    user_id: str
    k: int
    model_name: str
    request_id: str = field(default_factory=new_request_id)
    assigned: tuple[str, int] | None = None
    items: list[str] = field(default_factory=list)
    model_version: int | None = None
    variant: str = FALLBACK  # production | canary | fallback
    fallback_reason: str | None = None
    latency_ms: float = 0.0
    done: bool = False
    # Phase timestamps of serving.probe (dev only; None unless STREAMREC_SERVE_PROBE_PATH).
    marks: dict[str, float] | None = None

    @property
    def version_label(self) -> str:
        return "none" if self.model_version is None else str(self.model_version)

    def assignment_labels(self) -> tuple[str, str]:
        """(assigned_variant, assigned_version); "none" without a production model."""
        return assignment_labels(self.assigned)

    def answer_labels(self) -> tuple[str, str]:
        """(answered_by, fallback_reason); ("none", "none") when no answer was made."""
        if not self.done:
            return "none", "none"
        return answer_labels(self.assigned, self.variant, self.fallback_reason)

    def body(self) -> dict:
        """The JSON response (``serving.routes.recommend.RecommendationOut``)."""
        return {
            "user_id": self.user_id,
            "items": self.items,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "variant": self.variant,
            "fallback_reason": self.fallback_reason,
            "request_id": self.request_id,
        }
