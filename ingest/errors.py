from __future__ import annotations

from schemas.errors import StreamrecError


class DatasetError(StreamrecError):
    """A dataset could not be fetched or read."""

    def __init__(self, message: str, *, dataset: str) -> None:
        self.dataset = dataset
        super().__init__(message)


class NotDelivered(StreamrecError):
    """Some lines were accepted but not confirmed by the broker: they are in ``path``, so
    producing that file again completes the set (event ids make the re-send safe)."""

    def __init__(
        self, count: int, reasons: list[str], *, path: str | None, report: object = None
    ) -> None:
        self.count = count
        self.reasons = reasons
        self.path = path
        self.report = report  # the ProduceReport of the run
        why = "; ".join(reasons[:3])
        where = (
            f"they are in {path}: `streamrec produce --file {path}` sends them again"
            if path
            else "they could not be written to a file"
        )
        super().__init__(f"{count} line(s) not delivered ({why}); {where}")
