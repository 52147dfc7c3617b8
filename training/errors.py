"""Errors of the training pipeline."""

from __future__ import annotations

from schemas.errors import StreamrecError


class TrainingError(StreamrecError):
    """Root of training errors."""


class NoSnapshotsError(TrainingError):
    """No snapshot file matched: wrong storage URL, nothing flushed yet, or a range too narrow."""

    def __init__(self, *, url: str, prefix: str, detail: str = "") -> None:
        self.url = url
        self.prefix = prefix
        extra = f" {detail}" if detail else ""
        super().__init__(
            f"no event snapshots under {url}/{prefix}{extra} "
            "(is the stream processor running and flushing to this storage URL?)"
        )


class NotEnoughDataError(TrainingError):
    def __init__(self, message: str, *, n_users: int, n_items: int, n_interactions: int) -> None:
        self.n_users = n_users
        self.n_items = n_items
        self.n_interactions = n_interactions
        super().__init__(message)


class CatalogError(TrainingError):
    def __init__(self, message: str, *, source: str) -> None:
        self.source = source
        super().__init__(message)
