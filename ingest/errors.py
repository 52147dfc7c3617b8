from __future__ import annotations

from schemas.errors import StreamrecError


class DatasetError(StreamrecError):
    """A dataset could not be fetched or read."""

    def __init__(self, message: str, *, dataset: str) -> None:
        self.dataset = dataset
        super().__init__(message)
