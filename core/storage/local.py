"""Object store on a local directory, with the same atomicity as S3's conditional writes."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from core.errors import ObjectNotFound, StorageError, StorageUnavailable
from core.storage.base import ObjectStore


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class LocalStore(ObjectStore):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root != path and self.root not in path.parents:
            raise StorageError(f"key {key!r} escapes the store root", url=self.url, key=key)
        return path

    # A write goes to ``.<name>.<random>.tmp`` beside its object and is renamed into place;
    # a writer killed in between (kill -9) leaves the temp file behind.
    def _write_tmp(self, path: Path, data: bytes) -> str:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageUnavailable(f"cannot create {path.parent}: {err}", url=self.url) from err
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # durable before it becomes visible under its name
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp

    def remove_stale_temp(self, prefix: str, name_prefix: str, older_than: float) -> list[str]:
        # Only temp files (".<name_prefix>...tmp") last written before ``older_than``: a live
        # writer's temp file is younger, and if one is removed anyway its rename fails and
        # the writer writes it again.
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        removed = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if not (name.startswith(f".{name_prefix}") and name.endswith(".tmp")):
                    continue
                path = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_mtime < older_than:
                        os.unlink(path)
                        removed.append(path)
        return removed

    def _fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_tmp(path, data)
        os.replace(tmp, path)
        self._fsync_dir(path.parent)

    def put_deferred(self, key: str, data: bytes) -> None:
        # The file's data is fsynced before the rename (a crash never leaves a partial
        # file under its name); only the directory entry waits for ``sync``: one fsync
        # per directory per batch instead of one per file (~1 ms each).
        path = self._path(key)
        os.replace(self._write_tmp(path, data), path)

    def sync(self, keys: Iterable[str]) -> None:
        # Each distinct directory once, and its ancestors up to the root: ``put`` may have
        # created them (mkdir), and a new directory's entry lives in its parent. Deepest
        # first, so an ancestor is synced after the entries below it.
        dirs: set[Path] = set()
        for parent in {key.rpartition("/")[0] for key in keys}:
            d = self._path(parent) if parent else self.root
            while d not in dirs and (d == self.root or self.root in d.parents):
                dirs.add(d)
                d = d.parent
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            self._fsync_dir(d)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._write_tmp(path, data)
        try:
            os.link(tmp, path)  # link() fails if the name exists: an atomic create
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        self._fsync_dir(path.parent)
        return True

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put_if_match(self, key: str, data: bytes, etag: str | None) -> bool:
        path = self._path(key)
        with self._locked(path):
            try:
                current = _etag(path.read_bytes())
            except FileNotFoundError:
                current = None
            if current != etag:
                return False
            self.put(key, data)
            return True

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(url=self.url, key=key) from None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, _etag(data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        # A prefix may end mid-name (like S3); walk from its directory and filter.
        # "snap" must also match "snapshot/x" even when a directory "snap/" exists.
        start = base if (not prefix or prefix.endswith("/")) and base.is_dir() else base.parent
        if not start.exists():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith("."):
                    continue  # temp and lock files
                rel = os.path.relpath(os.path.join(dirpath, name), self.root)
                if rel.startswith(prefix):
                    keys.append(rel)
        return sorted(keys)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise StorageUnavailable(f"{self.root} is not writable", url=self.url)
        except OSError as err:
            raise StorageUnavailable(f"{self.root}: {err}", url=self.url) from err
