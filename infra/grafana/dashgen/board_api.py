"""streamrec / API: the recommendation API's traffic, latency by variant, errors,
fallbacks and model cache."""

from __future__ import annotations

from typing import Any

from .panels import RECO, W, dashboard, panel, quantiles, row, target


def build() -> dict[str, Any]:
    count = "streamrec_serving_request_seconds_count"
    errors_5xx = f'sum(rate({count}{{status=~"5.."}}[{W}])) or vector(0)'
    outage_fallbacks = (
        f'sum(rate(streamrec_serving_fallbacks_total{{reason!="unknown_user"}}[{W}])) or vector(0)'
    )
    hits, misses = (
        "streamrec_serving_model_cache_hits_total",
        "streamrec_serving_model_cache_misses_total",
    )
    return dashboard(
        "streamrec-api",
        "streamrec / API",
        "The recommendation API: traffic, latency by variant, errors, fallbacks, model cache.",
        [
            row("Traffic"),
            panel(
                "Requests/s by endpoint and status",
                [
                    target(
                        f"sum by (endpoint, status) (rate({count}[{W}]))", "{{endpoint}} {{status}}"
                    )
                ],
                unit="reqps",
            ),
            panel(
                "/recommend requests/s by variant",
                [target(f"sum by (variant) (rate({count}{{{RECO}}}[{W}]))", "{{variant}}")],
                unit="reqps",
                stack=True,
                description="production, canary, or fallback (popularity).",
            ),
            row("Latency"),
            panel(
                "/recommend latency by variant",
                quantiles("streamrec_serving_request_seconds", "variant", RECO),
                unit="s",
                description="The model path has a 50 ms budget (STREAMREC_SERVE_BUDGET_MS).",
            ),
            panel(
                "/recommend p99 by model version",
                quantiles("streamrec_serving_request_seconds", "model_version", RECO, (0.99,)),
                unit="s",
            ),
            row("Errors and fallbacks"),
            panel(
                "Server error ratio (5xx)",
                [target(f"({errors_5xx}) / sum(rate({count}[{W}]))", "5xx ratio")],
                unit="percentunit",
                description="Alert StreamrecApiErrorRatioHigh above 1%.",
                width=8,
            ),
            panel(
                "Client errors/s (4xx) by endpoint",
                [
                    target(
                        f'sum by (endpoint, status) (rate({count}{{status=~"4.."}}[{W}]))',
                        "{{endpoint}} {{status}}",
                    )
                ],
                unit="reqps",
                width=8,
            ),
            panel(
                "Outage fallback ratio",
                [
                    target(
                        f'({outage_fallbacks}) / sum(rate({count}{{{RECO},status=~"2.."}}[{W}]))',
                        "fallback ratio (excl. unknown users)",
                    )
                ],
                unit="percentunit",
                description="Fallbacks for any reason but unknown_user, over /recommend "
                "answers. Alert StreamrecApiFallbackRatioHigh above 5%.",
                width=8,
            ),
            panel(
                "Fallbacks/s by reason",
                [
                    target(
                        f"sum by (reason) (rate(streamrec_serving_fallbacks_total[{W}]))",
                        "{{reason}}",
                    )
                ],
                unit="reqps",
                stack=True,
                width=24,
            ),
            row("Model cache"),
            panel(
                "Model cache hit ratio",
                [
                    target(
                        f"sum(rate({hits}[{W}])) "
                        f"/ (sum(rate({hits}[{W}])) + sum(rate({misses}[{W}])))",
                        "model cache",
                    ),
                    target(
                        f'sum(rate(streamrec_serving_result_cache_total{{result="hit"}}[{W}])) '
                        f"/ sum(rate(streamrec_serving_result_cache_total[{W}]))",
                        "result cache",
                    ),
                ],
                unit="percentunit",
                width=8,
            ),
            panel(
                "Model versions loaded",
                [target("max by (instance) (streamrec_serving_models_loaded)", "{{instance}}")],
                kind="stat",
                width=4,
            ),
            panel(
                "Model loads and evictions",
                [
                    target(
                        f"sum by (outcome) (increase(streamrec_serving_model_loads_total[{W}]))",
                        "load {{outcome}}",
                    ),
                    target(
                        f"sum(increase(streamrec_serving_model_cache_evictions_total[{W}]))",
                        "evicted",
                    ),
                ],
                width=6,
            ),
            panel(
                "Model load time",
                quantiles("streamrec_serving_model_load_seconds", "", qs=(0.5, 0.99)),
                unit="s",
                width=6,
            ),
        ],
    )
