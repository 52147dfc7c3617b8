"""Registry facts the API already knows, as Prometheus metrics: which versions are live,
when they were trained, their offline metrics, the canary weight and the alias history.

They are computed at scrape time from the alias document the model cache adopted (no extra
read of it) and from the model cards of the live versions (read once per version: versions
are immutable). A collector rather than gauges, so a version that stops being live
disappears from the next scrape instead of lingering as a stale series.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.manifest import AliasDocument, ModelManifest

if TYPE_CHECKING:
    from serving.model_cache import ModelCache

log = logging.getLogger(__name__)


def live_versions(doc: AliasDocument) -> dict[str, int]:
    """variant -> version of what serves now (a canary at weight 0 serves nobody)."""
    live = {"production": doc.production.version} if doc.production else {}
    if doc.canary is not None and doc.canary.weight > 0:
        live["canary"] = doc.canary.version
    return live


class RegistryFacts(Collector):
    def __init__(self, name: str = "") -> None:
        self.name = name  # set by follow() to the model cache's registry name
        self.doc: AliasDocument | None = None
        self.manifests: dict[int, ModelManifest] = {}

    def update(self, doc: AliasDocument, manifests: dict[int, ModelManifest]) -> None:
        """Swap in a new snapshot (one assignment each: a scrape never sees half of it)."""
        self.manifests = {**self.manifests, **manifests}
        self.doc = doc

    def collect(self) -> Iterator[Metric]:
        doc, manifests, name = self.doc, self.manifests, self.name
        live = GaugeMetricFamily(
            "streamrec_model_live_version",
            "Model version serving each variant (production, canary).",
            labels=["name", "variant"],
        )
        created = GaugeMetricFamily(
            "streamrec_model_created_timestamp_seconds",
            "When each live version was trained (model card created_at).",
            labels=["name", "version", "variant"],
        )
        offline = GaugeMetricFamily(
            "streamrec_model_offline_metric",
            "Holdout metrics of each live version, from its model card.",
            labels=["name", "version", "variant", "metric"],
        )
        canary = GaugeMetricFamily(
            "streamrec_canary_weight",
            "Percent of users routed to the canary (0 without a canary).",
            labels=["name"],
        )
        changes = CounterMetricFamily(
            "streamrec_alias_changes",
            "Alias history entries by action (publish, promote, rollback, canary...). "
            "Counted from the document, so a restarted API reports the same totals.",
            labels=["name", "action"],
        )
        if doc is not None:
            for variant, version in live_versions(doc).items():
                live.add_metric([name, variant], version)
                card = manifests.get(version)
                if card is None:
                    continue
                created.add_metric([name, str(version), variant], card.created_at.timestamp())
                for metric, value in card.metrics.get(card.kind, {}).items():
                    offline.add_metric([name, str(version), variant, metric], value)
            canary.add_metric([name], doc.canary.weight if doc.canary else 0.0)
            for action, n in sorted(Counter(h.action for h in doc.history).items()):
                changes.add_metric([name, action], n)
        yield from (live, created, offline, canary, changes)


async def follow(
    models: ModelCache,
    facts: RegistryFacts,
    interval_s: float,
    read_manifest: Callable[[int], ModelManifest] | None = None,
) -> None:
    """Keep ``facts`` on the alias document the model cache has adopted, forever.

    Reads the model card of each newly live version on a thread; a card that cannot be
    read now (store down) is retried on the next round, and the rest is exported meanwhile.
    """
    read = read_manifest or models.registry.manifest
    facts.name = models.name
    seen_revision = -1
    while True:
        doc = models.current_aliases
        wanted = set(live_versions(doc).values()) if doc is not None else set()
        missing = wanted - facts.manifests.keys()
        if doc is not None and (doc.revision != seen_revision or missing):
            cards: dict[int, ModelManifest] = {}
            for version in sorted(missing):
                try:
                    cards[version] = await asyncio.to_thread(read, version)
                except Exception as err:
                    log.warning("model card of v%d unreadable for metrics: %s", version, err)
            facts.update(doc, cards)
            seen_revision = doc.revision
        await asyncio.sleep(interval_s)
