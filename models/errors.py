"""Errors of the model package and its registry. Each carries the data a caller needs."""

from __future__ import annotations

from schemas.errors import StreamrecError


class ModelError(StreamrecError):
    """Root of the model package's errors."""


class ArtifactError(ModelError):
    """Artifacts cannot be turned back into a model (missing file, wrong shape, bad format)."""

    def __init__(self, message: str, *, kind: str, artifact: str | None = None) -> None:
        self.kind = kind
        self.artifact = artifact
        super().__init__(message)


class RegistryError(ModelError):
    def __init__(self, message: str, *, name: str, url: str) -> None:
        self.name = name
        self.url = url
        super().__init__(message)


class VersionNotFound(RegistryError):
    def __init__(self, *, name: str, version: int, url: str) -> None:
        self.version = version
        super().__init__(f"model {name!r} has no version {version} in {url}", name=name, url=url)


class IntegrityError(RegistryError):
    """A version is tampered with or incomplete: it is refused, never half-loaded."""

    def __init__(
        self, reason: str, *, name: str, version: int, url: str, artifact: str | None = None
    ) -> None:
        self.version = version
        self.artifact = artifact
        self.reason = reason
        what = f" artifact {artifact!r}" if artifact else ""
        super().__init__(
            f"refusing model {name!r} version {version}{what} in {url}: {reason}",
            name=name,
            url=url,
        )


class AliasConflict(RegistryError):
    """The alias document kept changing under us; every retry lost the race."""

    def __init__(self, *, name: str, url: str, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(
            f"aliases of model {name!r} in {url} changed concurrently {attempts} times; try again",
            name=name,
            url=url,
        )


class AliasError(RegistryError):
    """An alias change that makes no sense (e.g. nothing to roll back to)."""
