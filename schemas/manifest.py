"""The model registry's documents: the model card of each immutable version and the alias
document that says which version serves production (and canary, with its weight).

Registry layout in object storage (``<storage_url>/``)::

    models/<name>/<version>/manifest.json     model card, written last (a version without it
                                              is incomplete and never loaded)
    models/<name>/<version>/<artifact files>  npz (allow_pickle=False), LightGBM text, JSON
    models/<name>/aliases.json                AliasDocument, replaced atomically

Versions are positive integers; a version directory is never modified after its manifest
is written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "manifest.json"
ALIASES_FILE = "aliases.json"
FORMAT_VERSION = 1


class ArtifactInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    format: str = Field(description="npz | lightgbm-text | json")


class TrainingData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    snapshot_files: list[str] = Field(default_factory=list)
    event_time_min: datetime | None = None
    event_time_max: datetime | None = None
    n_events: int = 0
    n_interactions: int = 0
    n_users: int = 0
    n_items: int = 0


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    version: int = Field(ge=1)
    kind: str = Field(description="e.g. als+lgbm, popularity")
    created_at: datetime
    code_version: str
    training_data: TrainingData
    params: dict[str, Any] = Field(default_factory=dict)
    # model label -> metric -> value, the candidate and its baselines on the same holdout.
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    artifacts: dict[str, ArtifactInfo]
    notes: str = ""


class CanaryAlias(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)
    weight: float = Field(ge=0, le=100, description="Percent of users routed to the canary.")
    rollout_id: str
    since: datetime


class ProductionAlias(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)
    since: datetime


class AliasChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: datetime
    action: Literal["promote", "rollback", "canary", "canary_weight", "canary_clear", "publish"]
    version: int | None = None
    previous_version: int | None = None
    weight: float | None = None
    actor: str = "cli"
    reason: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict, description="Numbers behind a decision.")


class AliasDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    revision: int = Field(0, ge=0, description="Bumped on every write (optimistic locking).")
    production: ProductionAlias | None = None
    canary: CanaryAlias | None = None
    history: list[AliasChange] = Field(default_factory=list)
