"""The object-store contract, one test body per rule, run against BOTH implementations:
``LocalStore`` on a temp dir and ``S3Store`` on a real S3 server (the local MinIO from
``streamrec stack up --service minio``, reached through boto3). No mocks."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from core.config import Settings
from core.errors import ObjectNotFound
from core.storage import ObjectStore, open_store
from core.storage.local import LocalStore
from core.storage.s3 import S3Store

# The first test builds MinIO when .cache/bin has none (~5 min cold on 2 cores).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return open_store(f"file://{tmp_path / 'store'}")
    s3: Settings = request.getfixturevalue("s3_storage")
    return open_store(s3.storage, endpoint_url=s3.storage.s3_endpoint_url)


def _race(n: int, fn: Callable[[int], object]) -> list[object]:
    """Run ``fn(0..n-1)`` in threads released together; results in thread order."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as err:  # surfaced below: a thread must not swallow failures
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_open_store_picks_the_implementation(store: ObjectStore) -> None:
    assert isinstance(store, LocalStore | S3Store)
    store.check()  # reachable and usable (S3: the bucket exists and the credentials work)


def test_put_replaces_the_whole_object(store: ObjectStore) -> None:
    store.put("models/reco/v1/card.json", b'{"version": 1, "padding": "xxxxxxxx"}')
    store.put("models/reco/v1/card.json", b"{}")
    assert store.get("models/reco/v1/card.json") == b"{}"
    assert store.exists("models/reco/v1/card.json")
    assert not store.exists("models/reco/v1/other.json")


def test_binary_payloads_round_trip(store: ObjectStore) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    store.put("snapshots/part-0.parquet", payload)
    assert store.get("snapshots/part-0.parquet") == payload


def test_put_deferred_objects_are_whole_and_listed_after_sync(store: ObjectStore) -> None:
    keys = [f"snap/event_type=w/date=2024-01-0{d}/part-{p}.parquet" for d in (1, 2) for p in (0, 1)]
    for i, key in enumerate(keys):
        store.put_deferred(key, bytes([i]) * 1000)
    store.sync(keys)
    assert store.list("snap/") == sorted(keys)
    assert [store.get(k) for k in keys] == [bytes([i]) * 1000 for i in range(len(keys))]


class DirSyncLog(LocalStore):
    """A LocalStore that records its directory fsyncs (still doing them)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.synced: list[Path] = []

    def _fsync_dir(self, path: Path) -> None:
        self.synced.append(path)
        super()._fsync_dir(path)


def test_local_sync_fsyncs_each_directory_once_deepest_first(tmp_path: Path) -> None:
    store = DirSyncLog(tmp_path / "store")
    keys = [f"s/t=w/d={d}/p{p}.parquet" for d in (1, 2) for p in (0, 1, 2)] + ["top.txt"]
    for key in keys:
        store.put_deferred(key, b"x")
    assert store.synced == []  # deferred: no directory fsync per file
    store.sync(keys)
    root = store.root
    assert sorted(store.synced) == sorted(
        [root / "s/t=w/d=1", root / "s/t=w/d=2", root / "s/t=w", root / "s", root]
    )
    depth = [len(p.parts) for p in store.synced]
    assert depth == sorted(depth, reverse=True)  # an entry before the directory holding it
    store.synced.clear()
    store.put("s/t=w/d=1/p9.parquet", b"y")  # plain put: durable on return
    assert store.synced == [root / "s/t=w/d=1"]


def test_put_if_absent_creates_once(store: ObjectStore) -> None:
    assert store.put_if_absent("versions/v1", b"first") is True
    assert store.put_if_absent("versions/v1", b"second") is False
    assert store.get("versions/v1") == b"first"


def test_put_if_absent_race_has_exactly_one_winner(store: ObjectStore) -> None:
    results = _race(8, lambda i: store.put_if_absent("versions/raced", f"writer-{i}".encode()))
    winners = [i for i, won in enumerate(results) if won is True]
    assert len(winners) == 1, results
    assert store.get("versions/raced") == f"writer-{winners[0]}".encode()


def test_get_with_etag_tracks_content(store: ObjectStore) -> None:
    store.put("aliases.json", b"a")
    data, etag = store.get_with_etag("aliases.json")
    assert data == b"a"
    assert store.get_with_etag("aliases.json")[1] == etag  # stable while unchanged
    store.put("aliases.json", b"b")
    assert store.get_with_etag("aliases.json")[1] != etag


def test_put_if_match_is_compare_and_swap(store: ObjectStore) -> None:
    assert store.put_if_match("aliases.json", b"v1", None) is True  # None: create if absent
    assert store.put_if_match("aliases.json", b"again", None) is False
    _, etag = store.get_with_etag("aliases.json")
    assert store.put_if_match("aliases.json", b"v2", etag) is True
    assert store.put_if_match("aliases.json", b"stale", etag) is False  # etag is now old
    assert store.get("aliases.json") == b"v2"
    assert store.put_if_match("missing.json", b"x", etag) is False
    assert not store.exists("missing.json")


def test_put_if_match_loses_no_update_under_contention(store: ObjectStore) -> None:
    store.put("counter", b"0")
    increments = 5

    def bump(_: int) -> None:
        for _ in range(increments):
            while True:  # read-modify-CAS until this writer's increment lands
                data, etag = store.get_with_etag("counter")
                if store.put_if_match("counter", str(int(data) + 1).encode(), etag):
                    break

    _race(4, bump)
    assert int(store.get("counter")) == 4 * increments  # a lost update would show here


def test_list_by_prefix_is_sorted_and_exact(store: ObjectStore) -> None:
    for key in ("snap/b/2", "snap/a/1", "snap/a/0", "snapshot/x", "other/y"):
        store.put(key, b".")
    assert store.list("snap/a/") == ["snap/a/0", "snap/a/1"]
    assert store.list("snap/") == ["snap/a/0", "snap/a/1", "snap/b/2"]
    assert store.list("snap") == ["snap/a/0", "snap/a/1", "snap/b/2", "snapshot/x"]
    assert store.list("nothing/") == []
    assert store.list() == sorted(["snap/b/2", "snap/a/1", "snap/a/0", "snapshot/x", "other/y"])


def test_delete_then_not_found(store: ObjectStore) -> None:
    store.put("tmp/key", b"x")
    store.delete("tmp/key")
    assert not store.exists("tmp/key")
    assert store.list("tmp/") == []
    store.delete("tmp/key")  # deleting what is gone is not an error (idempotent cleanup)


def test_missing_keys_raise_object_not_found(store: ObjectStore) -> None:
    for read in (store.get, store.get_with_etag):
        with pytest.raises(ObjectNotFound) as err:
            read("no/such/key")
        assert err.value.key == "no/such/key"
        assert err.value.url == store.url


def test_stores_under_different_prefixes_do_not_see_each_other(
    store: ObjectStore, tmp_path: Path
) -> None:
    sibling_url = store.url.rstrip("/") + "-sibling"
    endpoint = getattr(getattr(store, "client", None), "meta", None)
    sibling = open_store(sibling_url, endpoint_url=endpoint.endpoint_url if endpoint else None)
    try:
        store.put("k", b"mine")
        sibling.put("k", b"theirs")
        assert store.get("k") == b"mine"
        assert store.list() == ["k"]
    finally:
        sibling.delete("k")


def test_s3_settings_reach_minio_from_a_subprocess(s3_settings: Settings) -> None:
    """What stream-worker and registry tests build on: the settings plus the environment
    the fixture sets are enough for a child process (a CLI command) to use the same prefix."""
    assert s3_settings.storage.location.startswith(f"s3://{s3_settings.minio.bucket}/test-")
    assert s3_settings.kafka.topic_prefix.startswith("t")  # still the per-test Kafka/Redis prefixes
    child = (
        "import sys\n"
        "from core.storage import open_store\n"
        "open_store(sys.argv[1], endpoint_url=sys.argv[2]).put('from-child', b'hi')\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            child,
            s3_settings.storage.location,
            str(s3_settings.storage.s3_endpoint_url),
        ],
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    store = open_store(
        s3_settings.storage.location, endpoint_url=s3_settings.storage.s3_endpoint_url
    )
    assert isinstance(store, S3Store)
    assert store.list() == ["from-child"]
    assert store.get("from-child") == b"hi"


# --- the MinIO service of `streamrec stack` ---------------------------------------------------
def test_minio_is_up_identified_and_bucket_creation_is_idempotent(minio: Settings) -> None:
    from streamrec import stack
    from streamrec.stack.minio import MinioService

    service = MinioService(minio)
    assert service.probe()  # answers as MinIO (Server header), not just an open port
    (state,) = stack.status(minio, ["minio"])
    assert state.state in {"running", "external"}
    assert state.port == minio.minio.port
    assert service.ensure_bucket() is False  # exists already: no error, nothing created
    assert service.installed()  # the pinned version is what runs from .cache/bin


def test_minio_up_refuses_a_port_held_by_another_server(tmp_path: Path) -> None:
    import http.server
    import socket

    from streamrec import stack
    from streamrec.stack.errors import PortInUseError

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        console = s.getsockname()[1]
    try:
        settings = Settings(data_dir=tmp_path).with_sections(
            minio={"port": server.server_address[1], "console_port": console}
        )
        with pytest.raises(PortInUseError) as err:
            stack.up(settings, ["minio"])
        assert err.value.service == "minio"
        assert err.value.port == server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_minio_refuses_a_password_it_would_reject(tmp_path: Path) -> None:
    from schemas.errors import ConfigError
    from streamrec.stack.minio import MinioService

    settings = Settings(data_dir=tmp_path).with_sections(minio={"root_password": "short"})
    with pytest.raises(ConfigError, match="at least 8 characters"):
        MinioService(settings).prepare()
