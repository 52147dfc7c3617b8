"""Stage 4: the quality gate and publishing to the registry.

The gate compares the candidate with the current production version on the same holdout
users and items. Production was trained on earlier data, which may include part of this
holdout; scoring it there would flatter it. So when its training data reaches into the
holdout, both are compared only on held-out interactions newer than production's last
training event; if too few users have such interactions, the comparison falls back to the
full holdout and the report says production's numbers are optimistic (which makes the gate
stricter, never laxer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from models.base import Recommender
from models.errors import ModelError
from models.registry import ModelRegistry
from schemas.manifest import ModelManifest
from training.data import Interactions
from training.evaluate import make_holdout, ranking_metrics

log = logging.getLogger(__name__)


@dataclass
class GateDecision:
    passed: bool
    reason: str
    metric: str
    production_version: int | None = None
    candidate: dict[str, float] = field(default_factory=dict)
    production: dict[str, float] = field(default_factory=dict)
    holdout_users: int = 0
    forced: bool = False

    def evidence(self) -> dict:
        return {
            "metric": self.metric,
            "production_version": self.production_version,
            "candidate": self.candidate,
            "production": self.production,
            "holdout_users": self.holdout_users,
        }


def quality_gate(
    candidate: Recommender,
    registry: ModelRegistry,
    train: Interactions,
    test: Interactions,
    *,
    metric: str = "ndcg@10",
    min_gain: float = 0.0,
    min_users: int = 50,
    max_users: int | None = None,
    seed: int = 0,
    force: bool = False,
) -> GateDecision:
    """Does ``candidate`` (fitted on ``train``) beat production on the ``test`` holdout?"""
    aliases = registry.aliases()
    if aliases.production is None:
        return _verdict(GateDecision(True, "no production version yet", metric), force)
    version = aliases.production.version
    try:
        manifest = registry.manifest(version)
        production = registry.load(version)
    except ModelError as err:
        return _verdict(
            GateDecision(
                True, f"production version {version} cannot be loaded ({err})", metric, version
            ),
            force,
        )
    scope, eval_test = _fair_holdout(manifest, test, min_users)
    holdout = make_holdout(train, eval_test, max_users=max_users, seed=seed)
    cand = ranking_metrics(candidate, holdout)
    prod = ranking_metrics(production, holdout)
    needed = prod[metric] * (1.0 + min_gain)
    passed = cand[metric] > needed
    verb = "beats" if passed else "does not beat"
    gain = f" (+{min_gain:.0%} required)" if min_gain else ""
    reason = (
        f"candidate {metric} {cand[metric]:.4f} {verb} production v{version} "
        f"{prod[metric]:.4f}{gain} on {len(holdout)} users, {scope}"
    )
    decision = GateDecision(passed, reason, metric, version, cand, prod, len(holdout))
    return _verdict(decision, force)


def _fair_holdout(
    manifest: ModelManifest, test: Interactions, min_users: int
) -> tuple[str, Interactions]:
    seen_until = manifest.training_data.event_time_max
    if seen_until is None:
        return "full holdout (production's training range unknown)", test
    cutoff = seen_until.timestamp()
    newer = test.ts > cutoff
    if newer.all():
        return "full holdout (production never saw it)", test
    fresh = test.subset(newer)
    n_users = len(set(fresh.users.tolist()))
    if n_users >= min_users:
        return f"held-out interactions after production's data ({seen_until:%Y-%m-%d})", fresh
    share = 1.0 - float(newer.mean())
    return (
        f"full holdout; production trained on {share:.0%} of it, so its score is optimistic",
        test,
    )


def _verdict(decision: GateDecision, force: bool) -> GateDecision:
    if force and not decision.passed:
        decision.passed = True
        decision.forced = True
        decision.reason = f"forced (--force): {decision.reason}"
    return decision


def publish_version(
    registry: ModelRegistry,
    model: Recommender,
    *,
    decision: GateDecision,
    training_data,
    params: dict,
    metrics: dict[str, dict[str, float]],
    promote: bool = False,
    notes: str = "",
) -> ModelManifest | None:
    """Publish ``model`` if the gate passed; promote it to production when asked."""
    if not decision.passed:
        log.info("not published: %s", decision.reason)
        return None
    all_metrics = dict(metrics)
    if decision.production_version is not None and decision.production:
        all_metrics[f"gate:production-v{decision.production_version}"] = decision.production
        all_metrics["gate:candidate"] = decision.candidate
    manifest = registry.publish(
        model,
        training_data=training_data,
        params=params,
        metrics=all_metrics,
        notes=f"{notes}; {decision.reason}" if notes else decision.reason,
    )
    if promote:
        registry.promote(
            manifest.version,
            reason=f"train --promote: {decision.reason}",
            actor="train",
            evidence=decision.evidence(),
        )
    return manifest
