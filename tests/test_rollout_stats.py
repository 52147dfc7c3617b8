"""Pure statistics and the step decision of the rollout controller (no services)."""

from __future__ import annotations

import math

import pytest

from rollout.decision import ArmStats, Thresholds, evaluate, parse_steps
from rollout.source import Snapshot
from rollout.stats import (
    bucket_delta,
    error_ratio,
    harm_test,
    histogram_quantile,
    normal_cdf,
    normal_ppf,
    samples_needed,
)

INF = math.inf


def test_normal_cdf_and_ppf_match_known_values():
    assert normal_cdf(0) == pytest.approx(0.5)
    assert normal_cdf(-1.6448536) == pytest.approx(0.05, abs=1e-6)
    assert normal_ppf(0.975) == pytest.approx(1.959964, abs=1e-5)


def test_harm_test_pooled_matches_a_hand_computed_z():
    # 30/200 vs 50/200: pooled p = 0.2, se = sqrt(0.2*0.8*(2/200)) = 0.04, z = -0.1/0.04
    t = harm_test(30, 200, 50, 200)
    assert t.z == pytest.approx(-2.5)
    assert t.p_value == pytest.approx(normal_cdf(-2.5))
    assert t.difference == pytest.approx(-0.1)


def test_harm_test_is_one_sided_a_better_canary_is_never_harm():
    assert harm_test(80, 200, 50, 200).p_value > 0.99
    assert harm_test(50, 200, 50, 200).p_value == pytest.approx(0.5)


def test_a_margin_tolerates_small_drops():
    strict = harm_test(180, 1000, 200, 1000)
    lenient = harm_test(180, 1000, 200, 1000, margin=0.03)
    assert lenient.p_value > strict.p_value
    # Unpooled SE with a margin: z = (0.18 - 0.2 + 0.03) / sqrt(.18*.82/1000 + .2*.8/1000)
    se = math.sqrt(0.18 * 0.82 / 1000 + 0.2 * 0.8 / 1000)
    assert lenient.z == pytest.approx(0.01 / se)


def test_harm_test_degenerate_and_invalid_inputs():
    assert harm_test(0, 10, 0, 10).p_value == pytest.approx(0.5)
    assert harm_test(0, 10, 10, 10).p_value < 0.001
    with pytest.raises(ValueError, match="at least one sample"):
        harm_test(0, 0, 1, 10)
    with pytest.raises(ValueError, match=r"within 0\.\.10"):
        harm_test(11, 10, 1, 10)


def test_samples_needed_grows_with_smaller_drops():
    n2 = samples_needed(0.2, 0.02)
    assert 4000 < n2 < 7000
    assert samples_needed(0.2, 0.05) < n2 / 4


def test_histogram_quantile_interpolates_like_promql():
    buckets = [(0.01, 50.0), (0.05, 90.0), (0.1, 100.0), (INF, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    # rank 95 lies halfway through the (0.05, 0.1] bucket
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.075)
    assert histogram_quantile(0.99, [(0.1, 0.0), (INF, 10.0)]) == pytest.approx(0.1)
    assert histogram_quantile(0.99, [(0.1, 0.0), (INF, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


def test_bucket_delta_and_counter_resets():
    before = [(0.1, 10.0), (INF, 12.0)]
    assert bucket_delta([(0.1, 15.0), (INF, 20.0)], before) == [(0.1, 5.0), (INF, 8.0)]
    assert bucket_delta([(0.1, 1.0), (INF, 2.0)], before) == [(0.1, 1.0), (INF, 2.0)]


def test_a_step_cohort_starts_at_the_first_bucket_after_the_step_began():
    from rollout.live_source import bucket_epochs

    assert bucket_epochs(1_000_003, 1_000_035) == [1_000_010, 1_000_020, 1_000_030]
    assert bucket_epochs(1_000_010, 1_000_010) == [1_000_010]


def test_error_ratio():
    assert error_ratio(0, 0) == 0
    assert error_ratio(5, 100) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        error_ratio(3, 2)


def _arm(served, converted, requests=None, errors=0.0, fast=True):
    requests = float(served if requests is None else requests)
    bound = 0.01 if fast else 0.5
    buckets = ((bound, requests), (INF, requests))
    return ArmStats(served, converted, requests, errors, buckets)


def test_evaluate_rolls_back_a_canary_that_converts_worse():
    v = evaluate(_arm(300, 20), _arm(300, 90), Thresholds(min_samples=150))
    assert not v.passed
    assert "conversion" in v.reasons[0]
    assert v.evidence["test"]["p_value"] < 0.05
    assert v.evidence["canary"]["served"] == 300


def test_evaluate_passes_an_equal_or_better_canary():
    assert evaluate(_arm(300, 95), _arm(300, 90), Thresholds()).passed
    assert evaluate(_arm(300, 88), _arm(300, 90), Thresholds()).passed  # noise, not harm


def test_evaluate_guards_errors_and_latency():
    t = Thresholds(max_error_ratio_increase=0.01, max_p99_ratio=1.5, p99_slack_ms=10)
    errors = evaluate(_arm(300, 90, requests=300, errors=30), _arm(300, 90), t)
    assert not errors.passed and "error ratio" in errors.reasons[0]
    slow = evaluate(_arm(300, 90, fast=False), _arm(300, 90), t)
    assert not slow.passed and "p99" in slow.reasons[0]


def test_conversions_never_exceed_served_in_the_test():
    # Conversions of responses served before the step can land in it.
    v = evaluate(_arm(10, 15), _arm(10, 5), Thresholds())
    assert v.evidence["test"]["p_value"] > 0.5


def test_parse_steps():
    assert parse_steps("5, 50,100") == [5.0, 50.0, 100.0]
    for bad in ("", "50,5", "0,10", "5,x", "5,101"):
        with pytest.raises(ValueError):
            parse_steps(bad)


def test_snapshots_subtract_the_api_counters_and_keep_the_cohort():
    before = Snapshot({"canary": _arm(100, 10), "production": _arm(1000, 100)})
    after = Snapshot({"canary": _arm(250, 40), "production": _arm(1500, 160)})
    step = after.minus(before)
    # served/converted already are the step's cohort (responses served since its start)
    assert step.arm("canary").served == 250 and step.arm("canary").converted == 40
    assert step.arm("production").requests == 500
    assert step.arm("production").latency_buckets == ((0.01, 500.0), (INF, 500.0))
    assert Snapshot.from_json(after.to_json()) == after
    # The API restarted (counters went down): its counters count from zero.
    restarted = Snapshot({"canary": _arm(5, 1), "production": _arm(7, 2)}).minus(before)
    assert restarted.arm("canary").requests == 5
    assert restarted.arm("production").latency_buckets == ((0.01, 7.0), (INF, 7.0))
