"""Watch and rate batches decoded in C (issue 20): msgspec parses and type-checks each event
into a struct, and the checks that remain are made once over the whole batch (a handful of
C-level passes: ``map``, ``str.join``, ``bytes.count``, one regex), not per event in Python.
Per event that is ~1 us of CPU against ~3.5 for :func:`streams.fast_decode.fast_decode`.

It accepts exactly what ``fast_decode`` accepts, with the same records
(tests/test_streams_batch_decode.py compares the two on generated hostile input): a batch
any of whose events is outside that subset -- invalid or merely unusual -- returns None, and
the caller decodes it again in halves, then event by event, where the pydantic models give a
dead letter's precise reason. So this path never decides that an event is invalid.

The checks of ``fast_decode``, made batch-wide:

- no backslash anywhere, so every ``"`` delimits a string and the token ``"k"`` is a string
  ``k`` (a key or a value);
- msgspec: a JSON object per value with no unknown key, strings and numbers of the models'
  types and bounds (``strict``: no ``"5"``, ``true`` or ``5.0`` for an integer);
- no repeated key (msgspec, like orjson, keeps the last): a required key's token occurs once
  per event in the batch, an optional key's as often as the events that have it (an
  ``UNSET`` default tells those apart from ones without it); more of either, or a value
  spelled like a key, and the batch goes the slow way;
- ids: ASCII, printable, no space or comma (the models' pattern on ASCII), lengths by msgspec;
- ``ts``: ``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+00:00)`` (the batch's distinct shapes, digits as
  0, against one regex), parsed by msgspec (the datetimes) and Arrow (the epochs, for all of
  them at once), within the models' bounds; other zones and naive times take the per-event
  path, which converts them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from itertools import repeat
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import pyarrow as pa
from msgspec import UNSET, Meta, Struct, UnsetType
from msgspec.structs import astuple

from schemas.codec import MAX_EVENT_BYTES
from schemas.events import MAX_ID_LENGTH, MAX_TS, MIN_TS, RateEvent, WatchEvent
from streams.fast_decode import EventRecord

_Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_EventId = Annotated[str, Meta(min_length=1, max_length=128)]


class _Watch(Struct, forbid_unknown_fields=True, gc=False):
    event_id: _EventId
    user_id: _Id
    item_id: _Id
    ts: str
    event_type: Literal["watch"] | UnsetType = UNSET
    schema_version: Annotated[int, Meta(ge=1, le=WatchEvent.SCHEMA_VERSION)] | UnsetType = UNSET
    minute: Annotated[int, Meta(ge=0, le=100_000)] | UnsetType | None = UNSET
    seconds: Annotated[float, Meta(ge=0, le=86_400)] | UnsetType | None = UNSET


class _Rate(Struct, forbid_unknown_fields=True, gc=False):
    event_id: _EventId
    user_id: _Id
    item_id: _Id
    ts: str
    rating: Annotated[float, Meta(ge=0, le=5)]
    event_type: Literal["rate"] | UnsetType = UNSET
    schema_version: Annotated[int, Meta(ge=1, le=RateEvent.SCHEMA_VERSION)] | UnsetType = UNSET


_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "watch": msgspec.json.Decoder(_Watch),
    "rate": msgspec.json.Decoder(_Rate),
}
_REQUIRED = ("event_id", "user_id", "item_id", "ts")
_OPTIONAL = {
    "watch": ("event_type", "schema_version", "minute", "seconds"),
    "rate": ("event_type", "schema_version"),
}
_N_REQUIRED = {"watch": len(_REQUIRED), "rate": len(_REQUIRED) + 1}  # + rating
# Each struct's fields as a tuple (msgspec.structs.astuple), transposed into columns by zip:
# half the CPU of one attrgetter pass per field. The columns' positions in the structs:
_COLUMN = {
    etype: {f: j for j, f in enumerate(struct.__struct_fields__)}
    for etype, struct in (("watch", _Watch), ("rate", _Rate))
}
# The timestamps' shapes (digits as 0): ISO 8601 in UTC, which fromisoformat, msgspec and
# Arrow read alike, as the models do (the bounds are checked on the epochs).
_SHAPE = re.compile(r"0000-00-00T00:00:00(?:\.0{1,6})?(?:Z|\+00:00)").fullmatch
_ZEROS = str.maketrans("123456789", "000000000")
_ID_BYTES = bytes(c for c in range(0x21, 0x7F) if c != ord(","))
_MIN_EPOCH, _MAX_EPOCH = MIN_TS.timestamp(), MAX_TS.timestamp()
_Times = list[datetime]
_EPOCH_US = pa.timestamp("us", tz="UTC")
# Arrow's calls cost ~50 us whatever the size: below this many events timestamp() is cheaper.
_ARROW_MIN = 512
_timestamp = datetime.timestamp
_new = tuple.__new__


def _defaulted(column: Sequence, default: object) -> Sequence | repeat:
    """``column`` with ``UNSET`` replaced by ``default`` (C speed: ``dict.get`` over map)."""
    absent = column.count(UNSET)
    if absent == len(column):
        return repeat(default)
    if not absent:
        return column
    return list(map({UNSET: default}.get, column, column))


def _uniform(tss: Sequence[str]) -> str | None:
    """The timestamps joined, if all of them have the shape of the first (the common
    batch: e.g. always six fraction digits); None otherwise."""
    n = len(tss)
    joined = "".join(tss)
    width = len(tss[0])
    # n non-overlapping copies of the first's shape in a string of n times its length tile
    # it, and with no timestamp longer than the first, each timestamp is one copy.
    if (
        len(joined) == n * width
        and joined.translate(_ZEROS).count(tss[0].translate(_ZEROS)) == n
        and max(map(len, tss)) == width
    ):
        return joined
    return None


def _shapes_ok(tss: Sequence[str], joined: str | None) -> bool:
    if joined is not None:  # one shape
        return _SHAPE(tss[0].translate(_ZEROS)) is not None
    return all(map(_SHAPE, set("\x00".join(tss).translate(_ZEROS).split("\x00"))))


def _epochs(tss: Sequence[str], joined: str | None) -> list[float]:
    """Arrow's parse of ``tss``, then the float division of int microseconds:
    dt.timestamp() exactly, at a fraction of its cost per event. ``joined``: the
    timestamps of one width joined, handed to Arrow as one buffer and its offsets (no
    Python string read one by one)."""
    n = len(tss)
    if joined is not None:
        width = len(tss[0])
        offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        strings = pa.StringArray.from_buffers(
            n, pa.py_buffer(offsets), pa.py_buffer(joined.encode("ascii"))
        )
    else:
        strings = pa.array(tss, type=pa.string())
    micros = strings.cast(_EPOCH_US).cast(pa.int64()).to_numpy()
    return (micros / 1e6).tolist()


def decode_many(values: Sequence[bytes | None], event_type: str) -> list[EventRecord] | None:
    """The records of ``values`` (all watch or all rate), as ``fast_decode`` would make
    them one by one; None if any of them is outside the fast path's subset."""
    n = len(values)
    if not n:
        return []
    try:
        raw = b"".join(values)  # type: ignore[arg-type]  # None raises: the slow path
    except TypeError:
        return None
    # ASCII only (ids outside it take the models' Unicode pattern) and no backslash.
    if not raw.isascii() or 92 in raw or max(map(len, values)) > MAX_EVENT_BYTES:  # type: ignore[arg-type]
        return None
    try:
        structs = list(map(_DECODERS[event_type].decode, values))  # type: ignore[arg-type]
    except ValueError:  # msgspec.DecodeError and ValidationError are ValueErrors
        return None
    columns = list(zip(*map(astuple, structs), strict=True))
    col = _COLUMN[event_type]
    # Every '"' opens or closes a key or a string value (no backslash), and each key present
    # (UNSET: absent) adds two, each string value two more; a repeated key adds more still.
    optional = {k: columns[col[k]] for k in _OPTIONAL[event_type]}
    present = {k: n - column.count(UNSET) for k, column in optional.items()}
    keys = _N_REQUIRED[event_type] * n + sum(present.values())
    if raw.count(b'"') != 2 * (keys + 4 * n + present["event_type"]):
        return None
    versions = _defaulted(optional["schema_version"], 1)
    eids, users, items, tss = (columns[col[k]] for k in _REQUIRED)
    # Printable ASCII but space and comma: the bytes left once those are deleted (the ids
    # are ASCII: the batch is).
    ids = ("".join(eids) + "".join(users) + "".join(items)).encode("ascii")
    if ids.translate(None, _ID_BYTES):
        return None
    joined = _uniform(tss)
    if not _shapes_ok(tss, joined):
        return None
    try:
        dts = msgspec.convert(tss, _Times)  # e.g. 2024-02-30 raises
        epochs = _epochs(tss, joined) if n >= _ARROW_MIN else list(map(_timestamp, dts))
    except ValueError:
        return None
    if min(epochs) < _MIN_EPOCH or max(epochs) >= _MAX_EPOCH:
        return None
    if event_type == "watch":
        fields = zip(
            repeat("watch"), eids, users, items, dts, epochs, versions,
            _defaulted(optional["minute"], None), _defaulted(optional["seconds"], None),
            repeat(None),
        )  # fmt: skip
    else:
        fields = zip(
            repeat("rate"), eids, users, items, dts, epochs, versions, repeat(None),
            repeat(None), columns[col["rating"]],
        )  # fmt: skip
    return list(map(_new, repeat(EventRecord), fields))
