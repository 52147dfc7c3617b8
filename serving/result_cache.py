"""Memoised model answers. The key holds every input of the model call (model version, user,
k, the user's Redis history, the generation of the live item-feature table), so a hit is
exactly what recomputing would return: a new event for the user, a feature refresh that
changed something, or a new model version all miss. It saves the model call, the costliest
part of a request, when the same user asks again before anything changed (page reloads,
clients polling)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class ResultCache:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, list[str]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> list[str] | None:
        if self.maxsize <= 0:
            return None
        items = self._data.get(key)
        if items is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return items

    def put(self, key: Hashable, items: list[str]) -> None:
        if self.maxsize <= 0:
            return
        self._data[key] = items
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        """Whether it memoises at all (a size of 0 turns it off)."""
        return self.maxsize > 0
