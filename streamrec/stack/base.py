"""What every local-stack service has in common: a pid file, a log file, a port, a probe.

A service is "ours" only while its pid file names a live process whose command line still
contains :attr:`Service.marker`; that check is what lets ``down`` stop exactly what ``up``
started and never a process that merely reused the pid or a server somebody else runs.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from core.config import Settings
from schemas.errors import ConfigError
from streamrec.stack.errors import ExitedError, NotReadyError, PortInUseError

log = logging.getLogger(__name__)

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

# Children we started in this process, so a child that died is reaped (poll) instead of
# lingering as a zombie that still "exists" for os.kill(pid, 0).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ServiceState:
    """One service as seen by ``up``/``down``/``status``.

    ``state`` is one of: started, running, external (answers on the port but was not started
    by streamrec), not ready, stopped, conflict (the port answers but is not the service).
    """

    name: str
    state: str
    port: int
    pid: int | None = None
    log_path: Path | None = None
    detail: str = ""
    #: A cluster node's part in its cluster (e.g. "master 0-5460"); empty for single nodes.
    role: str = ""


def host_port_from_url(value: str, *, default_port: int, setting: str) -> tuple[str, int]:
    """``host:port`` of the first address in a bootstrap list or a URL like ``redis://h:p/0``."""
    first = value.split(",")[0].strip()
    parts = urlsplit(first if "://" in first else f"//{first}")
    try:
        port = parts.port or default_port
    except ValueError as err:
        raise ConfigError(f"{setting}={value!r}: {err}") from None
    if not parts.hostname:
        raise ConfigError(f"{setting}={value!r}: no host")
    return parts.hostname, port


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def process_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie someone else has not reaped yet still accepts signal 0
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            return True
        # The main thread of a dying JVM turns "Z" while its other threads still tear down,
        # holding its ports open for a moment: the process is gone when they are.
        return len(list(Path(f"/proc/{pid}/task").iterdir())) > 1
    except (OSError, IndexError):
        return True


def process_cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:  # no /proc (macOS): ask ps
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True
        )
        return out.stdout


def render_template(src: Path, dst: Path, **values: object) -> Path:
    """Fill ``${name}`` placeholders of ``src`` into ``dst``; a missing value is a KeyError."""
    text = Template(src.read_text()).substitute({k: str(v) for k, v in values.items()})
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text)
    return dst


class Service(ABC):
    """A local server process that streamrec installs, starts, probes and stops."""

    # Per class, except the nodes of a cluster, which set their own per instance.
    name: str
    #: Substring of the process command line that proves a pid is still our process.
    marker: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # --- what subclasses define ------------------------------------------------------
    @property
    @abstractmethod
    def port(self) -> int: ...

    @abstractmethod
    def ensure_installed(self) -> None:
        """Install whatever the service needs, if missing. Idempotent and cheap when done."""

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the server in the foreground (after :meth:`prepare`)."""

    @abstractmethod
    def probe(self, timeout: float = 2.0) -> bool:
        """Whether the port answers as this service (not merely whether it is open)."""

    def prepare(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Render configs, format storage: whatever must exist before the first start."""

    def other_ports(self) -> dict[str, int]:
        """Ports besides :attr:`port` the process will bind, by role; they must be free."""
        return {}

    def environment(self) -> dict[str, str] | None:
        """The process environment (None: inherit ours)."""
        return None

    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- paths -----------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.settings.data_path / "run"

    @property
    def pid_path(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_path(self) -> Path:
        return self.settings.data_path / "logs" / f"{self.name}.log"

    @property
    def console_path(self) -> Path:
        """Where the process's stdout/stderr go (the log itself unless it logs elsewhere)."""
        return self.log_path

    # --- process lifecycle -----------------------------------------------------------
    def _pid_in_file(self) -> int | None:
        """Whatever pid our pid file names (alive or not); None without a readable file."""
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        """The pid from our pid file if that process is alive and still ours."""
        pid = self._pid_in_file()
        if pid is None:
            return None
        if process_alive(pid) and self.marker in process_cmdline(pid):
            return pid
        return None

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self) -> int:
        """Start the server detached from us (own session) and write its pid file."""
        self.ensure_installed()
        self.prepare()
        for role, port in {"": self.port, **self.other_ports()}.items():
            if port_open(port):
                raise PortInUseError(self.name, port, role)
        cmd = self.command()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.console_path.parent.mkdir(parents=True, exist_ok=True)
        log.debug("%s: %s", self.name, shlex.join(cmd))
        with self.console_path.open("ab") as out:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"\n--- {stamp} streamrec stack: {shlex.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.settings.data_path,
                env=self.environment(),
                start_new_session=True,  # survives our exit and our terminal's Ctrl-C
            )
        _CHILDREN[proc.pid] = proc
        tmp = self.pid_path.with_suffix(".pid.tmp")
        tmp.write_text(f"{proc.pid}\n")
        tmp.replace(self.pid_path)
        return proc.pid

    def wait_ready(self, timeout: float) -> None:
        """Block until :meth:`probe` succeeds; fail fast if the process dies."""
        deadline = time.monotonic() + timeout
        while True:
            if self.pid() is None and not self._child_running():
                raise ExitedError(self.name, self._returncode(), self.console_path)
            if self.probe(timeout=max(0.5, min(2.0, deadline - time.monotonic()))):
                return
            if time.monotonic() >= deadline:
                raise NotReadyError(self.name, timeout, self.log_path)
            time.sleep(0.25)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM our process, SIGKILL it after ``timeout``; returns the pid it stopped."""
        pid = self.pid()
        if pid is None and self._child_running():
            # Our own child, though the pid-file check disagrees (seen once under heavy load;
            # logged to find out why). Popen is authoritative for a child we started.
            pid = self._pid_in_file()
            log.warning(
                "%s: pid %d is our running child but failed the pid check (%r)",
                self.name,
                pid,
                process_cmdline(pid)[:120] if pid is not None else "",
            )
        if pid is None:
            self.pid_path.unlink(missing_ok=True)  # stale or absent: nothing of ours to stop
            return None
        log.info("stopping %s (pid %d)", self.name, pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if process_alive(pid):
            log.warning("%s (pid %d) ignored SIGTERM for %g s; killing it", self.name, pid, timeout)
            # The process leads its own session (start_new_session), so the group is ours.
            os.killpg(pid, signal.SIGKILL)
            while process_alive(pid):
                time.sleep(0.05)
        _CHILDREN.pop(pid, None)
        self.pid_path.unlink(missing_ok=True)
        return pid

    def observe(self) -> ServiceState:
        """Current state for ``status`` (probes the port, so it takes up to ~2 s)."""
        pid = self.pid()
        if pid is not None:
            state = "running" if self.probe() else "not ready"
            return ServiceState(self.name, state, self.port, pid, self.log_path)
        if not port_open(self.port):
            return ServiceState(self.name, "stopped", self.port, log_path=self.log_path)
        if self.probe():
            return ServiceState(self.name, "external", self.port, detail="not started by streamrec")
        return ServiceState(self.name, "conflict", self.port, detail=f"port busy, not {self.name}")

    def _child_running(self) -> bool:
        """Whether the process we started in this very process is still running: for our own
        child, Popen is authoritative (the pid-file check is for processes started by others
        and was seen to flicker for a just-started child under heavy load)."""
        child = _CHILDREN.get(self._pid_in_file() or -1)
        return child is not None and child.poll() is None

    def _returncode(self) -> int | None:
        child = _CHILDREN.get(self._pid_in_file() or -1)
        return None if child is None else child.poll()

    def _require_local(self, host: str, setting: str) -> None:
        if host not in LOCAL_HOSTS:
            raise ConfigError(
                f"{setting} points at {host}; `streamrec stack` only runs services on localhost"
            )
