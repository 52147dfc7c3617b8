"""The settings: one :class:`Settings` of typed sections, nested the way Gorse's ``Config`` is
(``settings.kafka.bootstrap``, ``settings.stream.flush_events``...). Every knob is an
environment variable prefixed ``STREAMREC_``; each section reads its own (``core/config_*.py``),
under the names they had when the settings were one flat class (users have deployments).

A component is given the section(s) it reads, typed; only the composition roots (CLIs, the
API's context, the worker's parts, the stack) hold the whole :class:`Settings`.

Built on demand by :func:`get_settings` (never at import time), so tests can set the env first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.config_apps import ServeSettings, StreamSettings
from core.config_infra import KafkaSettings, RedisSettings, StorageSettings
from core.config_rollout import OnlineEvalSettings, RolloutSettings, SimulateSettings
from core.config_section import ENV_PREFIX, Section
from core.config_stack import (
    AlertmanagerSettings,
    ClusterSettings,
    MinioSettings,
    ObservabilitySettings,
    StackSettings,
)
from core.config_train import TrainSettings

# The repository root when running from a checkout; installed copies fall back to the cwd.
_REPO_ROOT = Path(__file__).resolve().parent.parent
_DEFAULT_HOME = _REPO_ROOT if (_REPO_ROOT / "pyproject.toml").exists() else Path.cwd()

__all__ = [
    "AlertmanagerSettings",
    "ClusterSettings",
    "KafkaSettings",
    "MinioSettings",
    "ObservabilitySettings",
    "OnlineEvalSettings",
    "RedisSettings",
    "RolloutSettings",
    "ServeSettings",
    "Settings",
    "SimulateSettings",
    "StackSettings",
    "StorageSettings",
    "StreamSettings",
    "TrainSettings",
    "get_settings",
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- where things live (not a section: every component resolves paths from these) --
    home: Path = Field(_DEFAULT_HOME, description="Project home; data/ and .cache/ live here.")
    data_dir: Path | None = Field(None, description="Runtime data (default: <home>/data).")
    cache_dir: Path | None = Field(
        None,
        description="Downloads and tool builds: Kafka jars, datasets, MinIO, terraform "
        "(default: $XDG_CACHE_HOME/streamrec or ~/.cache/streamrec, shared by checkouts).",
    )
    log_level: str = Field("INFO", description="Log level for our loggers.")
    model_name: str = Field("reco", description="Registry name: models/<name>/ in storage.")

    # --- sections, in the order the README lists them -----------------------------------
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    online_eval: OnlineEvalSettings = Field(default_factory=OnlineEvalSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    simulate: SimulateSettings = Field(default_factory=SimulateSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    minio: MinioSettings = Field(default_factory=MinioSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)

    @model_validator(mode="after")
    def _resolve_storage(self) -> Self:
        if self.storage.url is None:
            self.storage = self.storage.model_copy(update={"url": self.default_storage_url()})
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A storage URL left to its default follows a new ``home`` or ``data_dir``. Fields of
        sections change by :meth:`with_sections`."""
        update = dict(update or {})
        out = super().model_copy(update=update, deep=deep)
        moved = update.keys() & {"home", "data_dir"} and "storage" not in update
        if moved and self.storage.url == self.default_storage_url():
            url = out.default_storage_url()
            out.storage = out.storage.model_copy(update={"url": url})
        return out

    def with_sections(self, **changes: Mapping[str, Any]) -> Self:
        """A copy with some fields of some sections replaced, the rest kept:
        ``settings.with_sections(kafka={"topic_prefix": p}, redis={"key_prefix": p})``.

        Each changed section is validated again (a bad value raises pydantic's
        ``ValidationError``), and an unknown section or field is a ``TypeError`` rather than
        ignored: a typo must not leave a test on the shared prefix. Fields of
        :class:`Settings` itself (``home``, ``data_dir``...) change by ``model_copy``."""
        update: dict[str, Section] = {}
        for name, values in changes.items():
            kind = sections().get(name)
            if kind is None:
                raise TypeError(f"Settings has no section {name!r}: {', '.join(sections())}")
            if unknown := values.keys() - kind.model_fields.keys():
                raise TypeError(f"{kind.__name__} has no field {', '.join(sorted(unknown))}")
            # model_validate, not the constructor: the environment was read once already.
            update[name] = kind.model_validate({**getattr(self, name).model_dump(), **values})
        out = self.model_copy(update=update)
        if out.storage.url is None:  # storage={"url": None}: back to the data directory's
            out.storage = out.storage.model_copy(update={"url": out.default_storage_url()})
        return out

    @property
    def data_path(self) -> Path:
        return (self.data_dir or self.home / "data").resolve()

    @property
    def cache_path(self) -> Path:
        # Per user, not per checkout: a fresh clone (CI) reuses jars and tool builds (minutes).
        if self.cache_dir:
            return self.cache_dir.resolve()
        xdg = os.environ.get("XDG_CACHE_HOME")
        return ((Path(xdg) if xdg else Path.home() / ".cache") / "streamrec").resolve()

    def default_storage_url(self) -> str:
        return f"file://{self.data_path / 'storage'}"

    def topic(self, name: str) -> str:
        """Full topic name for a logical topic name (``watch`` -> ``streamrec.watch``)."""
        return self.kafka.topic(name)

    def environment(self) -> dict[str, str]:
        """Every setting that has a value, as the ``STREAMREC_*`` variable that sets it (for a
        child process to build the same settings)."""
        env = {}
        for flat, (section, field) in flat_names().items():
            value = getattr(getattr(self, section), field) if section else getattr(self, field)
            if value is None:
                continue
            if isinstance(value, SecretStr):  # str() of a secret is its mask
                value = value.get_secret_value()
            env[f"{ENV_PREFIX}{flat.upper()}"] = str(value)
        return env


@cache
def sections() -> dict[str, type[Section]]:
    """The sections of :class:`Settings`: field name -> its class."""
    return {
        name: kind
        for name, field in Settings.model_fields.items()
        if isinstance(kind := field.annotation, type) and issubclass(kind, Section)
    }


@cache
def flat_names() -> dict[str, tuple[str, str]]:
    """Every setting by the name of its variable (``STREAMREC_`` + name, lowercase) ->
    (section, field); section ``""`` for the few fields of :class:`Settings` itself."""
    out = {n: ("", n) for n in Settings.model_fields if n not in sections()}
    for section, kind in sections().items():
        for field, env in kind.env_names().items():
            out[env.removeprefix(ENV_PREFIX).lower()] = (section, field)
    return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests build ``Settings(...)`` directly instead."""
    return Settings()
