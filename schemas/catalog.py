"""Item catalog records, published to the compacted ``<prefix>.catalog`` topic keyed by item."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import ItemId


class ItemRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    SCHEMA_VERSION: ClassVar[int] = 1

    schema_version: int = Field(1, ge=1)
    item_id: ItemId
    title: str = Field(min_length=1, max_length=512)
    year: int | None = Field(None, ge=1850, le=2100)
    genres: list[str] = Field(default_factory=list, max_length=32)

    @property
    def key(self) -> bytes:
        return self.item_id.encode()
