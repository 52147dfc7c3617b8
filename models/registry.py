"""The model registry in object storage (layout in :mod:`schemas.manifest`).

Versions are immutable: a publisher first claims the next free version number with an
atomic create (``put_if_absent`` of ``_claim.json``), then writes the artifacts, then the
manifest (also ``put_if_absent``). Two racing publishers therefore never share a version
directory. The alias document is replaced with compare-and-swap (``put_if_match``) and
retried on conflict, so concurrent alias changes are serialised, never lost.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from core.config import StorageSettings
from core.errors import ObjectNotFound
from core.storage import ObjectStore, open_store
from models import aliases
from models.base import FORMATS, Recommender
from models.errors import AliasConflict, AliasError, IntegrityError, RegistryError, VersionNotFound
from models.kinds import model_from_artifacts
from models.version import code_version
from schemas.manifest import (
    ALIASES_FILE,
    MANIFEST_FILE,
    AliasDocument,
    ArtifactInfo,
    ModelManifest,
    TrainingData,
)

log = logging.getLogger(__name__)

CLAIM_FILE = "_claim.json"
ROOT = "models"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_RESERVED = {MANIFEST_FILE, CLAIM_FILE}
# Key under ModelManifest.params holding what the model's from_artifacts() needs.
MODEL_PARAMS = "model"


def _now() -> datetime:
    return datetime.now(UTC)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelRegistry:
    def __init__(self, store: ObjectStore, name: str = "reco", *, max_retries: int = 50) -> None:
        if not _NAME.match(name):
            raise RegistryError(
                f"invalid model name {name!r}: use 1-64 of a-z 0-9 _ - (starting alphanumeric)",
                name=name,
                url=store.url,
            )
        self.store = store
        self.name = name
        self.max_retries = max_retries
        self.prefix = f"{ROOT}/{name}/"

    @classmethod
    def from_settings(cls, storage: StorageSettings, name: str) -> ModelRegistry:
        """The registry of model ``name`` (``settings.model_name`` unless one is chosen) in
        the ``storage`` section's store."""
        return cls(open_store(storage), name)

    def __repr__(self) -> str:
        return f"ModelRegistry({self.store.url!r}, {self.name!r})"

    def _bad(self, version: int, reason: str, artifact: str | None = None) -> IntegrityError:
        return IntegrityError(
            reason, name=self.name, version=version, url=self.store.url, artifact=artifact
        )

    def _error(self, message: str) -> RegistryError:
        return RegistryError(message, name=self.name, url=self.store.url)

    def _key(self, version: int, file: str) -> str:
        return f"{self.prefix}{version}/{file}"

    def _version_dirs(self) -> dict[int, set[str]]:
        dirs: dict[int, set[str]] = {}
        for key in self.store.list(self.prefix):
            parts = key[len(self.prefix) :].split("/")
            if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) > 0:
                dirs.setdefault(int(parts[0]), set()).add(parts[1])
        return dirs

    # -- versions ----------------------------------------------------------------------
    def versions(self) -> list[int]:
        """Complete versions (those with a manifest), ascending."""
        return sorted(v for v, files in self._version_dirs().items() if MANIFEST_FILE in files)

    def manifest(self, version: int) -> ModelManifest:
        try:
            raw = self.store.get(self._key(version, MANIFEST_FILE))
        except ObjectNotFound:
            if version in self._version_dirs():
                reason = f"incomplete: no {MANIFEST_FILE} (publishing crashed or is in progress)"
                raise self._bad(version, reason) from None
            raise VersionNotFound(name=self.name, version=version, url=self.store.url) from None
        try:
            m = ModelManifest.model_validate_json(raw)
        except ValidationError as err:
            reason = (
                f"{MANIFEST_FILE} is not a valid model card: {err.error_count()} error(s), "
                f"first: {err.errors()[0]['msg']}"
            )
            raise self._bad(version, reason) from None
        if m.version != version or m.name != self.name:
            raise self._bad(version, f"{MANIFEST_FILE} describes {m.name!r} version {m.version}")
        return m

    def load(self, version: int) -> Recommender:
        """The model of ``version``, after checking every artifact's size and sha256."""
        m = self.manifest(version)
        files: dict[str, bytes] = {}
        for file, info in m.artifacts.items():
            try:
                data = self.store.get(self._key(version, file))
            except ObjectNotFound:
                raise self._bad(version, "incomplete: artifact missing", file) from None
            if len(data) != info.bytes or _sha256(data) != info.sha256:
                reason = (
                    f"sha256 mismatch ({len(data)} bytes, manifest says {info.bytes}); "
                    "the artifact was modified after publishing"
                )
                raise self._bad(version, reason, file)
            files[file] = data
        return model_from_artifacts(m.kind, files, m.params.get(MODEL_PARAMS, {}))

    def publish(
        self,
        model: Recommender,
        *,
        training_data: TrainingData,
        params: dict[str, Any],
        metrics: dict[str, dict[str, float]],
        notes: str = "",
        actor: str = "train",
    ) -> ModelManifest:
        """Write ``model`` as the next free version and return its model card."""
        artifacts = model.to_artifacts()
        for file, (_data, fmt) in artifacts.items():
            if file in _RESERVED or "/" in file or file.startswith("."):
                raise self._error(f"artifact name {file!r} is reserved or invalid")
            if fmt not in FORMATS:
                raise self._error(f"artifact {file!r} has format {fmt!r}; allowed: {FORMATS}")
        version = self._claim()
        infos = {}
        for file, (data, fmt) in artifacts.items():
            if not self.store.put_if_absent(self._key(version, file), data):
                # Only the claimant writes here, so this means someone broke the protocol.
                raise self._bad(version, "artifact exists in a freshly claimed version", file)
            infos[file] = ArtifactInfo(sha256=_sha256(data), bytes=len(data), format=fmt)
        manifest = ModelManifest(
            name=self.name,
            version=version,
            kind=model.kind,
            created_at=_now(),
            code_version=code_version(),
            training_data=training_data,
            params={**params, MODEL_PARAMS: model.params()},
            metrics=metrics,
            artifacts=infos,
            notes=notes,
        )
        body = orjson.dumps(manifest.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
        if not self.store.put_if_absent(self._key(version, MANIFEST_FILE), body):
            raise self._bad(version, "manifest exists in a freshly claimed version")
        self.update_aliases(
            lambda doc: aliases.record_publish(doc, version, actor=actor, reason=notes)
        )
        log.info("published %s version %d (%s)", self.name, version, model.kind)
        return manifest

    def _claim(self) -> int:
        for _ in range(self.max_retries):
            version = max(self._version_dirs(), default=0) + 1
            claim = orjson.dumps({"claimed_at": _now().isoformat(), "code": code_version()})
            if self.store.put_if_absent(self._key(version, CLAIM_FILE), claim):
                return version
            time.sleep(random.uniform(0.001, 0.02))  # another publisher took it; look again
        raise self._error(f"could not claim a version after {self.max_retries} attempts")

    # -- aliases -----------------------------------------------------------------------
    @property
    def _aliases_key(self) -> str:
        return f"{self.prefix}{ALIASES_FILE}"

    def _read_aliases(self) -> tuple[AliasDocument, str | None]:
        try:
            raw, etag = self.store.get_with_etag(self._aliases_key)
        except ObjectNotFound:
            return AliasDocument(name=self.name), None
        try:
            return AliasDocument.model_validate_json(raw), etag
        except ValidationError as err:
            msg = err.errors()[0]["msg"]
            raise self._error(f"{self._aliases_key} is corrupt: {msg}") from None

    def aliases(self) -> AliasDocument:
        return self._read_aliases()[0]

    def update_aliases(self, fn: Callable[[AliasDocument], AliasDocument | None]) -> AliasDocument:
        """Read-modify-write of the alias document. ``fn`` gets a private copy and returns
        the new document (or None after changing the copy in place); it may run several
        times when writers race, so it must only depend on the document it is given."""
        for attempt in range(1, self.max_retries + 1):
            current, etag = self._read_aliases()
            draft = current.model_copy(deep=True)
            new = fn(draft)
            new = draft if new is None else new
            new.name = self.name
            new.revision = current.revision + 1
            body = orjson.dumps(new.model_dump(mode="json"), option=orjson.OPT_INDENT_2)
            if self.store.put_if_match(self._aliases_key, body, etag):
                return new
            time.sleep(random.uniform(0, 0.005 * attempt))
        raise AliasConflict(name=self.name, url=self.store.url, attempts=self.max_retries)

    def _require(self, version: int) -> None:
        self.manifest(version)  # raises VersionNotFound / IntegrityError

    @staticmethod
    def _why(reason: str, actor: str, evidence: dict[str, Any] | None) -> dict[str, Any]:
        return {"reason": reason, "actor": actor, "evidence": evidence or {}}

    def promote(
        self,
        version: int,
        *,
        reason: str = "",
        actor: str = "cli",
        evidence: dict[str, Any] | None = None,
    ) -> AliasDocument:
        """Make ``version`` production (clearing a canary of the same version)."""
        self._require(version)
        why = self._why(reason, actor, evidence)
        return self.update_aliases(
            lambda doc: aliases.promote(doc, version, url=self.store.url, **why)
        )

    def rollback(
        self, *, reason: str = "", actor: str = "cli", evidence: dict[str, Any] | None = None
    ) -> AliasDocument:
        """Production goes back to the version it had before the current one."""
        why = self._why(reason, actor, evidence)
        return self.update_aliases(lambda doc: aliases.rollback(doc, url=self.store.url, **why))

    def set_canary(
        self,
        version: int,
        weight: float,
        *,
        rollout_id: str,
        reason: str = "",
        actor: str = "cli",
        evidence: dict[str, Any] | None = None,
    ) -> AliasDocument:
        """Route ``weight`` percent of users to ``version`` (a new canary, or a new weight)."""
        if not 0 <= weight <= 100:
            raise AliasError(
                f"canary weight must be within 0-100, got {weight}",
                name=self.name,
                url=self.store.url,
            )
        self._require(version)
        why = self._why(reason, actor, evidence)
        return self.update_aliases(
            lambda doc: aliases.set_canary(doc, version, weight, rollout_id=rollout_id, **why)
        )

    def clear_canary(
        self, *, reason: str = "", actor: str = "cli", evidence: dict[str, Any] | None = None
    ) -> AliasDocument:
        """Remove the canary (a no-op, without a write, when there is none)."""
        doc = self.aliases()
        if doc.canary is None:
            return doc
        why = self._why(reason, actor, evidence)
        return self.update_aliases(lambda doc: aliases.clear_canary(doc, **why))
