"""Data tests: MovieLens-100K as read from the recbole wheel, and the replay payloads."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ingest.movielens import MovieLens, load_movielens
from ingest.replay import iter_payloads, validate_dataset
from schemas.codec import decode_event, encode_event
from schemas.events import make_event_id


@pytest.fixture(scope="module")
def ml(stack_free_settings):
    return load_movielens(stack_free_settings.cache_path)


@pytest.fixture(scope="module")
def stack_free_settings():
    from core.config import Settings

    return Settings()


def test_full_dataset_shape(ml):
    assert len(ml) == 100_000
    assert len(np.unique(ml.users)) == 943
    assert len(np.unique(ml.items)) == 1682
    assert len(ml.catalog) == 1682
    assert set(np.unique(ml.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ml.ts.min() > 8.7e8 and ml.ts.max() < 9.0e8  # 1997-1998


def test_catalog_records(ml):
    toy = next(i for i in ml.catalog if i.item_id == "1")
    assert (toy.title, toy.year, toy.genres) == (
        "Toy Story",
        1995,
        ["Animation", "Children's", "Comedy"],
    )
    assert all(i.genres for i in ml.catalog)


def test_split_is_per_user_temporal_and_about_a_fifth(ml):
    train, test = ml.subset("train"), ml.subset("test")
    assert len(train) + len(test) == 100_000
    assert 0.19 < len(test) / 100_000 < 0.2
    assert (np.diff(train.ts) >= 0).all() and (np.diff(test.ts) >= 0).all()
    last_train = {}
    for u, t in zip(train.users, train.ts, strict=True):
        last_train[u] = max(last_train.get(u, 0), t)
    assert all(t >= last_train[u] for u, t in zip(test.users, test.ts, strict=True))


def test_dataset_passes_validation(ml):
    validate_dataset(ml)


def test_replay_bytes_equal_the_schema_encoding(ml):
    sub = ml.subset("all")
    for topic, key, value in itertools.islice(iter_payloads(sub), 2000):
        event = decode_event(value)
        assert encode_event(event) == value
        assert topic == event.TOPIC and key == event.user_id.encode()
        stamp = int(event.ts.timestamp())
        parts = ("ml100k", event.event_type, event.user_id, event.item_id, stamp)
        assert event.event_id == make_event_id(*parts)


def test_replay_bytes_of_ids_json_must_escape():
    # The per-event path pastes each id's JSON: quotes, backslashes and non-ASCII included.
    odd = MovieLens(
        users=np.array(['a"b', "c\\d", "é"], dtype=object),
        items=np.array(["1", 'x"', "ü\\"], dtype=object),
        ratings=np.array([3.5, 1.0, 5.0], dtype=np.float32),
        ts=np.array([1, 2, 4_000_000_000], dtype=np.int64),
        catalog=(),
    )
    validate_dataset(odd)
    payloads = list(iter_payloads(odd))
    assert len(payloads) == 6
    for topic, key, value in payloads:
        event = decode_event(value)
        assert encode_event(event) == value
        assert topic == event.TOPIC and key == event.user_id.encode()
    assert [decode_event(v).user_id for _, _, v in payloads[::2]] == ['a"b', "c\\d", "é"]


def test_event_ids_are_unique_and_stable(ml):
    ids = [decode_event(v).event_id for _, _, v in iter_payloads(ml)]
    assert len(ids) == 200_000 == len(set(ids))
    again = [decode_event(v).event_id for _, _, v in itertools.islice(iter_payloads(ml), 10)]
    assert again == ids[:10]
