"""``bench/_load.py``'s wrk runner on a port where nothing listens (a server that died, or
another benchmark's still holding the port): the benchmark ends with wrk's own message and
the port, not a ``CalledProcessError`` traceback. wrk is the Debian package the serving
benchmark installs (``ensure_wrk``)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_wrk_against_a_closed_port_ends_with_its_message_not_a_traceback() -> None:
    port = _closed_port()
    code = (
        "import sys; sys.path.insert(0, '.');"
        "from bench._load import wrk_run;"
        f"wrk_run({port}, ['1'], 1, 2)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"wrk exited with 1 against port {port}" in done.stderr
    assert "unable to connect" in done.stderr  # wrk's own words, passed on
