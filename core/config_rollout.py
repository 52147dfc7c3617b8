"""The rollout's settings (online evaluation, the canary controller, the simulator): a section
of :class:`core.config.Settings`, which inherits these fields (their environment variables are
``STREAMREC_ROLLOUT_*``, ``STREAMREC_ONLINE_EVAL_*`` and ``STREAMREC_SIMULATE_*`` as before)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RolloutFields(BaseModel):
    # --- rollout: online evaluation, canary controller, simulator (issue 7) ---------------
    # Online evaluation runs inside the stream processor (streams/online_eval.py); the
    # controller (`streamrec rollout`) reads its counters from Redis and the API's /metrics.
    online_eval_window_s: float = Field(
        1800.0,
        gt=0,
        description="Event-time window in which a watch of a recommended item converts the "
        "recommendation.",
    )
    online_eval_pending_cap: int = Field(
        50, ge=1, le=1000, description="Responses per user kept waiting for a conversion."
    )
    rollout_steps: str = Field(
        "5,50,100",
        pattern=r"^\s*\d+(\.\d+)?(\s*,\s*\d+(\.\d+)?)*\s*$",
        description="Canary weights (percent of users), comma-separated; reaching 100 "
        "promotes the canary.",
    )
    rollout_min_samples: int = Field(
        5000,
        ge=1,
        description="Recommendations each variant must serve in a step before it is judged "
        "(5000 detects a 2-point drop from 20% conversion with ~80% power at alpha 0.05).",
    )
    rollout_alpha: float = Field(
        0.05, gt=0, lt=1, description="Significance level of the one-sided conversion test."
    )
    rollout_margin: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Conversion drop (absolute) tolerated before the test calls it harm.",
    )
    rollout_max_error_ratio_increase: float = Field(
        0.01, ge=0, le=1, description="Canary 5xx ratio allowed above production's."
    )
    rollout_max_p99_ratio: float = Field(
        1.5, ge=1, description="Canary p99 latency allowed: production p99 times this..."
    )
    rollout_p99_slack_ms: float = Field(
        10.0, ge=0, description="...plus this (histogram buckets are coarse)."
    )
    rollout_settle_s: float = Field(
        60.0,
        ge=0,
        description="Wait after the sample threshold is met before judging (late conversions).",
    )
    rollout_poll_s: float = Field(5.0, gt=0, description="How often the controller re-checks.")
    rollout_api_url: str | None = Field(
        None, description="API whose /metrics the controller reads (default: serve_port)."
    )
    simulate_watch_prob: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Simulated user: chance to watch a recommended item that is among their "
        "held-out future interactions.",
    )
    simulate_noise_prob: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Simulated user: chance to watch a random recommended item otherwise.",
    )
