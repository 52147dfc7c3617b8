"""streamrec / Models & rollout: which versions serve, their age and offline metrics, the
canary, its online conversion and the rollout controller."""

from __future__ import annotations

from typing import Any

from .panels import RECO, W, dashboard, panel, row, target

ROLLOUT_CONVERSIONS = "streamrec_rollout_conversions_total"  # the stream worker's
ROLLOUT_IMPRESSIONS = "streamrec_rollout_impressions_total"  # online evaluation


def build() -> dict[str, Any]:
    created = "streamrec_model_created_timestamp_seconds"
    conversion = (
        f"sum by (variant, version) (rate({ROLLOUT_CONVERSIONS}[{W}])) "
        f"/ sum by (variant, version) (rate({ROLLOUT_IMPRESSIONS}[{W}]))"
    )
    return dashboard(
        "streamrec-models",
        "streamrec / Models & rollout",
        "Which versions serve, how old they are, their offline metrics, the canary and its "
        "online conversion.",
        [
            row("Live versions"),
            panel(
                "Live version",
                [target("max by (name, variant) (streamrec_model_live_version)", "{{variant}}")],
                kind="stat",
                width=6,
            ),
            panel(
                "Model age",
                [target(f"time() - max by (name, variant) ({created})", "{{variant}}")],
                kind="stat",
                unit="s",
                description="Alert StreamrecModelTooOld above 7 days (production).",
                width=6,
            ),
            panel(
                "Offline metrics of the live versions",
                [
                    target(
                        "max by (name, version, metric) (streamrec_model_offline_metric)",
                        "v{{version}} {{metric}}",
                    )
                ],
                kind="bargauge",
                description="From each version's model card (holdout evaluation at training).",
                width=12,
            ),
            row("Rollout"),
            panel(
                "Canary weight",
                [
                    target("max by (name) (streamrec_canary_weight)", "{{name}} (alias)"),
                    target(
                        "max by (model) (streamrec_rollout_canary_weight_percent)",
                        "{{model}} (controller)",
                    ),
                ],
                unit="percent",
                description="Percent of users routed to the canary (0: no canary): as the API "
                "reads it from the alias document, and as the rollout controller set it.",
            ),
            panel(
                "/recommend requests/s by model version",
                [
                    target(
                        f"sum by (variant, model_version) "
                        f"(rate(streamrec_serving_request_seconds_count{{{RECO}}}[{W}]))",
                        "{{variant}} v{{model_version}}",
                    )
                ],
                unit="reqps",
                stack=True,
            ),
            panel(
                "Online conversion by version",
                [target(conversion, "{{variant}} v{{version}}")],
                unit="percentunit",
                description="Conversions per recommendation impression (a recommended item "
                "watched within the window), counted by the stream worker's online evaluation.",
            ),
            panel(
                "Alias changes",
                [
                    target(
                        f"sum by (action) (increase(streamrec_alias_changes_total[{W}]))",
                        "{{action}}",
                    ),
                    target("max by (action) (streamrec_alias_changes_total)", "total {{action}}"),
                ],
                description="publish, promote, canary, canary_weight, canary_clear, rollback. "
                "Alert StreamrecModelRolledBack on a rollback.",
            ),
            row("Rollout controller"),
            panel(
                "Step and samples this step",
                [
                    target("max by (model) (streamrec_rollout_step)", "{{model}} step"),
                    target(
                        "max by (model, variant) (streamrec_rollout_step_served)",
                        "{{model}} {{variant}} served",
                    ),
                ],
                description="The running rollout's 1-based step (0: none) and the "
                "recommendations each variant served in it; a step is judged once both "
                "reach STREAMREC_ROLLOUT_MIN_SAMPLES.",
            ),
            panel(
                "Conversion this step",
                [
                    target(
                        "max by (model, variant) (streamrec_rollout_step_conversion_ratio)",
                        "{{model}} {{variant}}",
                    )
                ],
                unit="percentunit",
                description="What the controller's conversion test compares: production "
                "against canary, in the current step.",
            ),
        ],
    )
