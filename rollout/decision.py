"""The decision of one rollout step: canary vs production on the numbers of that step.

Pure: the controller gathers :class:`ArmStats` for both variants and calls
:func:`evaluate`; everything it decides on is returned in :attr:`Verdict.evidence`, which
the controller writes to the registry's alias history.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rollout.stats import error_ratio, harm_test, histogram_quantile
from schemas.rollout import parse_steps

__all__ = ["ArmStats", "Thresholds", "Verdict", "enough_samples", "evaluate", "parse_steps"]


@dataclass(frozen=True)
class ArmStats:
    """One variant's numbers during a step: recommendations served and converted (online
    evaluation) and, from the serving metrics of the users *assigned* to the variant,
    requests, 5xx ``errors``, ``timeouts`` (answered by the fallback because the model ran
    out of time), other answers the model failed to give (``degraded``: it raised, or could
    not be loaded) and latency buckets."""

    served: int = 0
    converted: int = 0
    requests: float = 0.0
    errors: float = 0.0
    latency_buckets: tuple[tuple[float, float], ...] = ()
    timeouts: float = 0.0
    degraded: float = 0.0

    @property
    def failures(self) -> float:
        return self.errors + self.timeouts + self.degraded

    @property
    def conversion_rate(self) -> float:
        return self.converted / self.served if self.served else 0.0

    @property
    def error_ratio(self) -> float:
        """Failed answers (5xx, timeouts, model failures) per request."""
        return error_ratio(self.failures, self.requests)

    @property
    def p99_s(self) -> float | None:
        return histogram_quantile(0.99, self.latency_buckets)

    def as_dict(self) -> dict:
        p99 = self.p99_s
        return {
            "served": self.served,
            "converted": self.converted,
            "conversion_rate": round(self.conversion_rate, 6),
            "requests": self.requests,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "degraded": self.degraded,
            "error_ratio": round(self.error_ratio, 6),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
        }


@dataclass(frozen=True)
class Thresholds:
    min_samples: int = 5000
    alpha: float = 0.05
    margin: float = 0.0
    max_error_ratio_increase: float = 0.01
    max_p99_ratio: float = 1.5
    p99_slack_ms: float = 10.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)


def enough_samples(canary: ArmStats, production: ArmStats, min_samples: int) -> bool:
    return canary.served >= min_samples and production.served >= min_samples


def evaluate(canary: ArmStats, production: ArmStats, t: Thresholds) -> Verdict:
    """Pass, or fail with every reason: conversion significantly worse (harm test), error
    ratio (5xx + timeouts + model failures, per request) higher than production's by more
    than ``max_error_ratio_increase``, or p99
    latency above ``production p99 * max_p99_ratio + p99_slack_ms``."""
    reasons: list[str] = []
    # Conversions of responses served just before the step may land in it: never more
    # conversions than recommendations served.
    conv = harm_test(
        min(canary.converted, canary.served),
        max(canary.served, 1),
        min(production.converted, production.served),
        max(production.served, 1),
        margin=t.margin,
    )
    if conv.p_value < t.alpha:
        reasons.append(
            f"conversion {conv.canary_rate:.2%} vs production {conv.production_rate:.2%} "
            f"(one-sided p={conv.p_value:.2g} < alpha={t.alpha:g})"
        )
    err_c, err_p = canary.error_ratio, production.error_ratio
    if err_c > err_p + t.max_error_ratio_increase:
        reasons.append(
            f"error ratio {err_c:.2%} vs production {err_p:.2%} "
            f"(5xx + timeouts + model failures; allowed +{t.max_error_ratio_increase:.2%})"
        )
    p99_c, p99_p = canary.p99_s, production.p99_s
    limit_ms = None
    if p99_c is not None and p99_p is not None:
        limit_ms = p99_p * 1000 * t.max_p99_ratio + t.p99_slack_ms
        if p99_c * 1000 > limit_ms:
            reasons.append(f"p99 {p99_c * 1000:.1f} ms above {limit_ms:.1f} ms")
    evidence = {
        "canary": canary.as_dict(),
        "production": production.as_dict(),
        "test": {
            "kind": "one-sided two-proportion z-test (harm)",
            "z": _finite(round(conv.z, 4)),
            "p_value": conv.p_value,
            "alpha": t.alpha,
            "margin": t.margin,
        },
        "p99_limit_ms": limit_ms,
        "thresholds": t.as_dict(),
    }
    return Verdict(not reasons, reasons, evidence)


def _finite(x: float) -> float | str:
    # JSON has no infinities; the alias document must stay valid JSON.
    return x if abs(x) != float("inf") else ("inf" if x > 0 else "-inf")
