"""Reading snapshots into interactions (real local object storage, snapshot layout)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from core.storage import open_store
from training.data import TimeRange, build_interactions, parse_day_or_time, read_events
from training.errors import NoSnapshotsError, TrainingError
from training.evaluate import Holdout, ranking_metrics
from training.synthetic import EventArrays, write_snapshots

DAY = 86_400
T0 = 1_700_000_000 - 1_700_000_000 % DAY  # midnight UTC


@pytest.fixture
def store(tmp_path: Path):
    return open_store(f"file://{tmp_path / 'storage'}")


def _events(store) -> None:
    users = np.array(["a", "a", "a", "b", "b"], dtype=object)
    items = np.array(["x", "y", "x", "x", "z"], dtype=object)
    ts = np.array([T0, T0 + 10, T0 + DAY, T0 + 2 * DAY, T0 + 2 * DAY + 5])
    write_snapshots(store, EventArrays(users, items, ts, np.array([4, 2, 5, 1, 3.0])))
    # Two watch events of (a, x) and one of (b, y), written as watch snapshots.
    watch = EventArrays(
        np.array(["a", "a", "b"], dtype=object),
        np.array(["x", "x", "y"], dtype=object),
        np.array([T0 + 1, T0 + 2, T0 + 3 * DAY]),
    )
    write_snapshots(store, watch, event_type="watch")


def test_interactions_weights_and_first_time(store) -> None:
    _events(store)
    events, files = read_events(store)
    assert len(events) == 8 and all(f.event_type in ("rate", "watch") for f in files)
    data = build_interactions(events, files)
    pairs = {
        (data.user_ids[u], data.item_ids[i]): (w, t, r)
        for u, i, w, t, r in zip(data.users, data.items, data.weights, data.ts, data.ratings,
                                 strict=True)
    }  # fmt: skip
    # (a, x): 2 watches -> log2(3), latest rating 5 (not the earlier 4) -> 1.0; first at T0.
    w, t, r = pairs[("a", "x")]
    assert w == pytest.approx(np.log2(3) + 1.0) and t == T0 and r == 5
    w, t, r = pairs[("b", "y")]
    assert w == pytest.approx(1.0) and np.isnan(r)  # a watch without rating
    assert pairs[("b", "x")][0] == pytest.approx(0.2)
    assert len(data) == 5
    assert data.source.n_events == 8 and data.source.n_interactions == 5
    assert data.source.event_time_min == datetime.fromtimestamp(T0, UTC)
    assert sorted(data.source.snapshot_files) == sorted(f.key for f in files)
    # Rows are sorted by user, then time.
    order = list(zip(data.users.tolist(), data.ts.tolist(), strict=True))
    assert order == sorted(order)


def test_time_range_reads_only_the_days_needed(store) -> None:
    _events(store)
    since = parse_day_or_time(datetime.fromtimestamp(T0 + DAY, UTC).strftime("%Y-%m-%d"))
    until = parse_day_or_time(
        datetime.fromtimestamp(T0 + 2 * DAY, UTC).strftime("%Y-%m-%d"), end=True
    )
    events, files = read_events(store, TimeRange(since, until))
    assert {f.date for f in files} == {
        datetime.fromtimestamp(T0 + DAY, UTC).date(),
        datetime.fromtimestamp(T0 + 2 * DAY, UTC).date(),
    }
    assert len(events) == 3  # (a,x) day 1, (b,x) and (b,z) day 2


def test_duplicate_event_ids_are_dropped(store) -> None:
    _events(store)
    first = store.list("events/event_type=rate/")[0]
    # The same batch written again under another offset range (a crash-replay gone wrong).
    store.put(first.replace("-o0000", "-o9999", 1), store.get(first))
    events, _ = read_events(store)
    assert len(events) == 8


def test_missing_snapshots_name_the_url_and_prefix(store) -> None:
    with pytest.raises(NoSnapshotsError) as err:
        read_events(store)
    assert store.url in str(err.value) and "events/event_type=" in str(err.value)
    _events(store)
    with pytest.raises(NoSnapshotsError, match="between"):
        read_events(store, TimeRange(since=datetime(2030, 1, 1, tzinfo=UTC)))


def test_bad_ranges_and_dates_are_refused() -> None:
    with pytest.raises(TrainingError, match="not a date"):
        parse_day_or_time("yesterday")
    with pytest.raises(TrainingError, match="empty time range"):
        TimeRange(datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))


class _Fixed:
    """A recommender that always answers the same list (to check the metric arithmetic)."""

    def __init__(self, items: list[str]) -> None:
        self.items = items

    def known_user(self, user_id: str) -> bool:
        return True

    def recommend(self, user_id, k, *, history=(), history_weights=None, exclude=(),
                  item_features=None):  # fmt: skip
        return [(i, 1.0) for i in self.items if i not in exclude][:k]


def test_ranking_metrics_by_hand() -> None:
    holdout = Holdout(
        users=["u1", "u2"], history=[["seen"], []], targets=[{"b", "z"}, {"q"}], n_items=10
    )
    m = ranking_metrics(_Fixed(["seen", "a", "b", "c"]), holdout)  # type: ignore[arg-type]
    # u1: "seen" excluded -> [a, b, c]; hit at rank 2: DCG 1/log2(3); IDCG 1 + 1/log2(3).
    ndcg_u1 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert m["ndcg@10"] == pytest.approx(ndcg_u1 / 2)
    assert m["recall@10"] == pytest.approx(0.5 / 2)
    assert m["hitrate@10"] == pytest.approx(0.5)
    assert m["coverage@10"] == pytest.approx(4 / 10)  # a, b, c for u1; seen, a, b, c for u2


def test_the_streamed_scan_equals_the_plain_read(store) -> None:
    from training.data import scan_interaction_events
    from training.scan import hash_ids

    _events(store)
    first = store.list("events/event_type=rate/")[0]
    store.put(first.replace("-o0000", "-o9999", 1), store.get(first))  # a duplicated batch
    for time_range in (TimeRange(), TimeRange(since=datetime.fromtimestamp(T0 + DAY, UTC))):
        plain = build_interactions(*read_events(store, time_range))
        scanned = build_interactions(*scan_interaction_events(store, time_range))
        for data in (plain, scanned):
            data.pairs = sorted(
                zip(data.user_ids[data.users].tolist(), data.item_ids[data.items].tolist(),
                    data.weights.tolist(), data.ts.tolist(), strict=True)
            )  # fmt: skip
        assert scanned.pairs == plain.pairs and scanned.source == plain.source
    ids = pa.array(["e1", "e2", "", "e1", "a-much-longer-event-id-" * 20, "e10"])
    h = hash_ids(ids)
    assert h[0] == h[3] and len(set(h.tolist())) == 5
    assert (hash_ids(ids.slice(3)) == h[3:]).all()  # offsets of a sliced array are honoured
