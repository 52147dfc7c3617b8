"""Model versions loaded lazily from the registry into a small LRU, one load per version even
when many first requests arrive together (single flight), and a background poll of the alias
document that pre-loads new versions before switching to them.

Everything here runs on the worker's event loop; registry calls (object-store I/O, sha256
checks, deserialisation) run on a dedicated thread pool so a slow load never blocks requests.
Callers bound their wait with a timeout; the load itself continues and lands in the cache.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from schemas.manifest import AliasDocument
from serving.errors import ModelUnavailable
from serving.metrics import ServingMetrics

if TYPE_CHECKING:
    from models.base import Recommender
    from models.registry import ModelRegistry

log = logging.getLogger(__name__)


class ModelCache:
    def __init__(
        self,
        registry: ModelRegistry,
        *,
        size: int,
        metrics: ServingMetrics,
        executor: Executor,
        retry_s: float = 5.0,
        warm: Callable[[Recommender], object] | None = None,
    ) -> None:
        self.registry = registry
        self.name: str = getattr(registry, "name", "model")
        self.size = size
        self.metrics = metrics
        self.retry_s = retry_s  # a failed version is not retried before this (no hammering)
        self._executor = executor
        # Runs on the loader thread after a load, before the model enters the cache: the
        # first (slow) scoring calls are paid there, never by a request (serving.warmup).
        self._warm = warm
        self._models: OrderedDict[int, Recommender] = OrderedDict()
        self._loading: dict[int, asyncio.Task[Recommender]] = {}
        self._failed: dict[int, tuple[float, str]] = {}
        self._aliases: AliasDocument | None = None
        self._aliases_task: asyncio.Task[AliasDocument] | None = None
        self._poll_lock = asyncio.Lock()
        self.loads = 0  # completed loads (tests and /readyz read it)

    # --- models -------------------------------------------------------------------------
    @property
    def loaded_versions(self) -> list[int]:
        """Least recently used first."""
        return list(self._models)

    def peek(self, version: int) -> Recommender | None:
        """The cached model without touching recency or metrics."""
        return self._models.get(version)

    def any_loaded(self) -> Recommender | None:
        return next(reversed(self._models.values()), None)

    async def get(self, version: int, timeout: float | None = None) -> Recommender:
        """The model of ``version``. Raises TimeoutError when it is still loading after
        ``timeout`` seconds (the load goes on) and ModelUnavailable when it cannot load."""
        model = self._models.get(version)
        if model is not None:
            self._models.move_to_end(version)
            self.metrics.cache_hits.inc()
            return model
        self.metrics.cache_misses.inc()
        task = self._loading.get(version)
        if task is None:
            failed = self._failed.get(version)
            if failed is not None and time.monotonic() - failed[0] < self.retry_s:
                raise ModelUnavailable(self.name, version, failed[1])
            task = asyncio.get_running_loop().create_task(self._load(version))
            self._loading[version] = task
            task.add_done_callback(self._load_done)
        # shield: a caller giving up must not cancel the load the others are waiting for.
        return await asyncio.wait_for(asyncio.shield(task), timeout)

    def _load_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported twice

    def _load_and_warm(self, version: int) -> Recommender:
        model = self.registry.load(version)
        if self._warm is not None:
            self._warm(model)
        return model

    def loaded_models(self) -> list[Recommender]:
        return list(self._models.values())

    async def _load(self, version: int) -> Recommender:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(self._executor, self._load_and_warm, version)
        except Exception as err:
            # Any failure (missing, tampered, store unreadable) keeps serving on fallback.
            self._failed[version] = (time.monotonic(), str(err) or type(err).__name__)
            self.metrics.model_loads.labels("failed").inc()
            log.error("model %s v%d failed to load: %s", self.name, version, err)
            raise ModelUnavailable(self.name, version, str(err)) from err
        finally:
            self._loading.pop(version, None)
        elapsed = time.perf_counter() - started
        self.metrics.model_loads.labels("ok").inc()
        self.metrics.model_load_seconds.observe(elapsed)
        self.loads += 1
        self._failed.pop(version, None)
        self._models[version] = model
        self._models.move_to_end(version)
        while len(self._models) > self.size:
            evicted, _ = self._models.popitem(last=False)
            self.metrics.cache_evictions.inc()
            log.info("model cache: evicted v%d", evicted)
        self.metrics.models_loaded.set(len(self._models))
        # The model's objects live until eviction: keep them out of the collector's full
        # passes, which otherwise walk them all and pause requests for tens of ms.
        gc.collect()
        gc.freeze()
        log.info(
            "model %s v%d (%s) loaded in %.2f s",
            self.name,
            version,
            getattr(model, "kind", "?"),
            elapsed,
        )
        return model

    # --- aliases ------------------------------------------------------------------------
    @property
    def current_aliases(self) -> AliasDocument | None:
        return self._aliases

    async def aliases(self, timeout: float | None = None) -> AliasDocument:
        """The alias document in effect, read once on first use (single flight) and then
        kept fresh by :meth:`poll`."""
        if self._aliases is not None:
            return self._aliases
        if self._aliases_task is None or self._aliases_task.done():
            self._aliases_task = asyncio.get_running_loop().create_task(self._read_aliases())
            self._aliases_task.add_done_callback(self._load_done)
        doc = await asyncio.wait_for(asyncio.shield(self._aliases_task), timeout)
        if self._aliases is None:
            self._aliases = doc
        return self._aliases

    async def _read_aliases(self) -> AliasDocument:
        # Not on the loader pool: a small read must not queue behind slow model loads.
        return await asyncio.to_thread(self.registry.aliases)

    def _wanted(self, doc: AliasDocument) -> list[int]:
        versions = [doc.production.version] if doc.production else []
        if doc.canary is not None and doc.canary.weight > 0:
            versions.append(doc.canary.version)
        return versions

    async def poll_once(self) -> bool:
        """Re-read the aliases; adopt a changed document once the versions it names are
        loaded (so no request waits on the new version). True if the document changed."""
        async with self._poll_lock:  # admin-triggered and periodic polls never interleave
            return await self._poll()

    async def _poll(self) -> bool:
        doc = await self._read_aliases()
        current = self._aliases
        if current is not None and doc.revision <= current.revision:
            return False  # unchanged, or an older read finishing late: never go back
        if current is not None and self._models:
            # Serving already: load what the new document needs before switching.
            for version in self._wanted(doc):
                if version in self._models:
                    continue
                try:
                    await self.get(version)
                except ModelUnavailable as err:
                    log.error("aliases rev %d not adopted: %s", doc.revision, err)
                    return False
        log.info(
            "aliases rev %d adopted: production %s, canary %s",
            doc.revision,
            doc.production.version if doc.production else None,
            f"v{doc.canary.version} at {doc.canary.weight:g}%" if doc.canary else None,
        )
        self._aliases = doc
        return True

    async def preload(self) -> None:
        """Load what the aliases name now, in the background (never raises)."""
        try:
            doc = await self.aliases()
            for version in self._wanted(doc):
                await self.get(version)
        except Exception as err:
            log.warning("preload: %s (requests load lazily instead)", err)

    async def run(self, interval_s: float, *, preload: bool = False) -> None:
        """Poll forever; a store outage is logged once and retried."""
        if preload:
            await self.preload()
        failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.poll_once()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if not failing:
                    log.warning("alias poll failed, serving the last aliases: %s", err)
                failing = True
