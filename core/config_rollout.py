"""The rollout's settings sections: online evaluation (inside the stream processor,
streams/online_eval.py), the canary controller (`streamrec rollout`, which reads its counters
from Redis and the API's /metrics) and the simulator (`streamrec simulate`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from core.config_section import Section


class OnlineEvalSettings(Section):
    """``STREAMREC_ONLINE_EVAL_*``."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_ONLINE_EVAL_")

    window_s: float = Field(
        1800.0,
        gt=0,
        description="Event-time window in which a watch of a recommended item converts the "
        "recommendation.",
    )
    pending_cap: int = Field(
        50, ge=1, le=1000, description="Responses per user kept waiting for a conversion."
    )


class RolloutSettings(Section):
    """``STREAMREC_ROLLOUT_*``."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_ROLLOUT_")

    steps: str = Field(
        "5,50,100",
        pattern=r"^\s*\d+(\.\d+)?(\s*,\s*\d+(\.\d+)?)*\s*$",
        description="Canary weights (percent of users), comma-separated; reaching 100 "
        "promotes the canary.",
    )
    min_samples: int = Field(
        5000,
        ge=1,
        description="Recommendations each variant must serve in a step before it is judged "
        "(5000 detects a 2-point drop from 20% conversion with ~80% power at alpha 0.05).",
    )
    alpha: float = Field(
        0.05, gt=0, lt=1, description="Significance level of the one-sided conversion test."
    )
    margin: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Conversion drop (absolute) tolerated before the test calls it harm.",
    )
    max_error_ratio_increase: float = Field(
        0.01, ge=0, le=1, description="Canary 5xx ratio allowed above production's."
    )
    max_p99_ratio: float = Field(
        1.5, ge=1, description="Canary p99 latency allowed: production p99 times this..."
    )
    p99_slack_ms: float = Field(
        10.0, ge=0, description="...plus this (histogram buckets are coarse)."
    )
    settle_s: float = Field(
        60.0,
        ge=0,
        description="Wait after the sample threshold is met before judging (late conversions).",
    )
    poll_s: float = Field(5.0, gt=0, description="How often the controller re-checks.")
    api_url: str | None = Field(
        None, description="API whose /metrics the controller reads (default: serve_port)."
    )
    metrics_port: int = Field(
        6067,
        ge=1,
        le=65535,
        description="Port of the rollout controller's /metrics, as scraped by Prometheus.",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address the rollout controller's /metrics binds; 0.0.0.0 when Prometheus "
        "scrapes it from another host or container.",
    )


class SimulateSettings(Section):
    """``STREAMREC_SIMULATE_*``: the simulated users of `streamrec simulate`."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_SIMULATE_")

    watch_prob: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Simulated user: chance to watch a recommended item that is among their "
        "held-out future interactions.",
    )
    noise_prob: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Simulated user: chance to watch a random recommended item otherwise.",
    )
