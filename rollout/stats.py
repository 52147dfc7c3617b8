"""The statistics behind a rollout decision: pure functions on counts.

Conversion is compared with a **one-sided two-proportion z-test for harm**:

    H0: p_canary >= p_production - margin      H1: p_canary < p_production - margin

The canary is rolled back when H0 is rejected at level ``alpha`` (``p_value < alpha``), i.e.
when the data show, beyond chance, that the canary converts worse than production by more
than ``margin``. The pooled standard error is used when ``margin == 0`` (the classic test),
the unpooled one otherwise (a Wald non-inferiority test). Not rejecting is not proof of
being as good: the power to catch a drop of ``delta`` comes from the sample size, roughly
``n >= (z_alpha + z_beta)^2 * 2 p (1 - p) / delta^2`` per arm (see :func:`samples_needed`),
which is what ``--min-samples`` should be set from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def normal_cdf(z: float) -> float:
    """Standard normal CDF (:data:`scipy.stats.norm`)."""
    # Imported here, not at module level: scipy.stats costs ~1 s to import, and `rollout`
    # is imported by CLIs that never reach a decision.
    from scipy.stats import norm

    return float(norm.cdf(z))


def normal_ppf(p: float) -> float:
    """Inverse of :func:`normal_cdf` (:data:`scipy.stats.norm`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be within (0, 1), got {p}")
    from scipy.stats import norm

    return float(norm.ppf(p))


@dataclass(frozen=True)
class HarmTest:
    canary_rate: float
    production_rate: float
    z: float
    p_value: float  # small: the canary is worse than production (by more than the margin)
    margin: float

    @property
    def difference(self) -> float:
        return self.canary_rate - self.production_rate


def harm_test(
    canary_conversions: int,
    canary_n: int,
    production_conversions: int,
    production_n: int,
    *,
    margin: float = 0.0,
) -> HarmTest:
    """One-sided two-proportion z-test of H1 "the canary converts worse by > margin"."""
    for name, x, n in (
        ("canary", canary_conversions, canary_n),
        ("production", production_conversions, production_n),
    ):
        if n <= 0:
            raise ValueError(f"{name}: need at least one sample, got n={n}")
        if not 0 <= x <= n:
            raise ValueError(f"{name}: conversions must be within 0..{n}, got {x}")
    if not 0 <= margin < 1:
        raise ValueError(f"margin must be within [0, 1), got {margin}")
    p1, p2 = canary_conversions / canary_n, production_conversions / production_n
    if margin == 0:
        pooled = (canary_conversions + production_conversions) / (canary_n + production_n)
        se = math.sqrt(pooled * (1 - pooled) * (1 / canary_n + 1 / production_n))
    else:
        se = math.sqrt(p1 * (1 - p1) / canary_n + p2 * (1 - p2) / production_n)
    diff = p1 - p2 + margin
    # se == 0: both arms all-or-nothing, the sign of the difference is the whole story.
    sign = 0.0 if diff == 0 else math.copysign(math.inf, diff)
    z = diff / se if se > 0 else sign
    return HarmTest(p1, p2, z, normal_cdf(z), margin)


def samples_needed(
    base_rate: float, drop: float, *, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Per-arm sample size for the harm test to detect an absolute drop ``drop`` from
    ``base_rate`` with the given power (normal approximation)."""
    if not 0 < base_rate < 1 or not 0 < drop < base_rate:
        raise ValueError("need 0 < drop < base_rate < 1")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha and power must be within (0, 1), got {alpha} and {power}")
    p2 = base_rate - drop
    z = normal_ppf(1 - alpha) + normal_ppf(power)
    var = base_rate * (1 - base_rate) + p2 * (1 - p2)
    return math.ceil(z * z * var / (drop * drop))


def error_ratio(errors: float, requests: float) -> float:
    """Share of failed requests (0 when there were none)."""
    if errors < 0 or requests < 0 or errors > requests:
        raise ValueError(f"need 0 <= errors <= requests, got {errors} of {requests}")
    return errors / requests if requests else 0.0


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a Prometheus histogram given as cumulative ``(le, count)``
    pairs (``le`` ascending, the last one +Inf), interpolated linearly inside the bucket
    as PromQL's ``histogram_quantile`` does. None when the histogram is empty; the highest
    finite bound when the quantile falls in the +Inf bucket."""
    if not 0 <= q <= 1:
        raise ValueError(f"q must be within [0, 1], got {q}")
    if not buckets:
        return None
    bounds = [b for b, _ in buckets]
    if bounds != sorted(bounds):
        raise ValueError("buckets must be sorted by their upper bound")
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def bucket_delta(
    now: Sequence[tuple[float, float]], before: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Cumulative buckets observed between two scrapes. A counter that went down (the API
    restarted) counts from zero, as Prometheus' ``increase`` does."""
    old = dict(before)
    if any(c < old.get(b, 0.0) for b, c in now):
        return [(b, c) for b, c in now]
    return [(b, c - old.get(b, 0.0)) for b, c in now]
