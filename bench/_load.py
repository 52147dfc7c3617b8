"""Load generators of the serving benchmark, each run as its own process so load never
shares the server's (or the driver's) interpreter.

* :func:`wrk_max`: max throughput with wrk (Debian package ``wrk``), closed loop
  (:func:`wrk_run`: with the count of requests answered);
* :func:`paced`: latency at a fixed rate, open loop: requests are sent on a fixed schedule
  and each latency is measured from its *scheduled* send time, so a stalled server cannot
  hide the queueing it causes (no coordinated omission). Run as
  ``python bench/_load.py --port P --rate R --duration S --users 1,2,3``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRK_INSTALL_HINT = "apt-get install -y wrk (Debian/Ubuntu)"


def ensure_wrk() -> str:
    """The wrk binary; installed with apt-get when missing (root or passwordless sudo)."""
    found = shutil.which("wrk")
    if found:
        return found
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    cmd = [*prefix, "apt-get", "install", "-y", "--no-install-recommends", "wrk"]
    if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
        subprocess.run([*prefix, "apt-get", "update"], capture_output=True, check=False)
        subprocess.run(cmd, capture_output=True, check=False)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit(f"the serving benchmark needs wrk, which could not be installed: "
                         f"{WRK_INSTALL_HINT}")  # fmt: skip
    return found


def _users_script(users: list[str]) -> Path:
    script = Path(tempfile.mkdtemp(prefix="streamrec-wrk-")) / "users.lua"
    script.write_text(
        "local users = {" + ",".join(f'"{u}"' for u in users) + "}\n"
        "local i = math.random(#users)\n"
        "request = function()\n  i = i % #users + 1\n"
        '  return wrk.format("GET", "/recommend/" .. users[i] .. "?k=20")\nend\n'
    )
    return script


def wrk_max(port: int, users: list[str], duration: float, conns: int) -> float:
    """Requests/s wrk reaches cycling through ``users``; any error aborts the benchmark."""
    return wrk_run(port, users, duration, conns)[0]


def wrk_run(port: int, users: list[str], duration: float, conns: int) -> tuple[float, int]:
    """(requests/s, requests answered) of :func:`wrk_max`."""
    script = _users_script(users)
    try:
        done = subprocess.run(
            [ensure_wrk(), "-t2", f"-c{conns}", f"-d{int(duration)}s", "-s", str(script),
             f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(script.parent, ignore_errors=True)
    if done.returncode != 0:  # e.g. nothing listening on the port: wrk says so on stderr
        raise SystemExit(
            f"wrk exited with {done.returncode} against port {port}:\n{done.stderr}{done.stdout}"
        )
    out = done.stdout
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: (.*)"):
        errors = re.search(pattern, out)
        if errors:
            raise SystemExit(f"wrk saw errors ({errors.group(0)}):\n{out}")
    rps, total = re.search(r"Requests/sec:\s+([\d.]+)", out), re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise SystemExit(f"wrk printed no request rate:\n{out}")
    return float(rps.group(1)), int(total.group(1))


async def _paced(port: int, rate: float, duration: float, conns: int, users: list[str]) -> dict:
    idle: asyncio.Queue = asyncio.Queue()
    for _ in range(conns):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    late: list[float] = []  # this generator's own lateness: scheduled send to actual write
    errors = 0

    async def one(n: int, at: float) -> None:
        nonlocal errors
        late.append(time.perf_counter() - at)  # before waiting for a free connection
        reader, writer = conn = await idle.get()
        writer.write(
            f"GET /recommend/{users[n % len(users)]}?k=20 HTTP/1.1\r\nHost: b\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        found = re.search(rb"(?i)content-length: (\d+)", head)
        if found is None:  # every answer of ours has one; a server that sends none is broken
            raise SystemExit(f"response without Content-Length: {head!r}")
        length = int(found.group(1))
        await reader.readexactly(length)
        # From the scheduled send time; perf_counter: the loop's clock ticks in whole ms.
        latencies.append(time.perf_counter() - at)
        errors += not head.startswith(b"HTTP/1.1 200")
        idle.put_nowait(conn)

    # Only unfinished requests are kept: one gather over every request at the end would
    # stall this loop while the last ones are in flight and bill that to the server.
    running: set[asyncio.Task] = set()
    start = time.perf_counter() + 0.2
    for n in range(int(rate * duration)):
        at = start + n / rate
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        task = asyncio.create_task(one(n, at))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)
    lat = sorted(latencies)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    late.sort()
    late_p99 = late[min(len(late) - 1, int(0.99 * len(late)))] * 1000 if late else 0.0
    return {
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "n": len(lat),
        "errors": errors,
        "send_late_p99_ms": late_p99,
    }


def paced(
    port: int,
    rate: float,
    duration: float,
    users: list[str],
    conns: int = 8,
    prefix: list[str] | None = None,
) -> dict:
    """p50/p99 (ms) at ``rate`` requests/s for ``duration`` s, from a separate process
    (started under ``prefix``, e.g. ``chrt -f 10``)."""
    out = subprocess.run(
        [*(prefix or []), sys.executable, __file__, "--port", str(port), "--rate", str(rate),
         "--duration", str(duration), "--conns", str(conns), "--users", ",".join(users)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out)


def realtime(pid: int, on: bool) -> None:
    """Every thread of ``pid``'s process tree to SCHED_FIFO (``on``) or back to normal."""
    from bench._serving_live import _children

    procs = [pid]
    for p in procs:
        procs += _children(p)
    policy = ["-f", "10"] if on else ["-o", "0"]
    for p in procs:
        subprocess.run(["chrt", "-a", policy[0], "-p", policy[1], str(p)], check=True)


def served_counts(port: int) -> dict[str, float]:
    """/recommend answers so far by variant, result-cache hits and batches of model calls
    (with the calls in them), from /metrics."""
    import httpx

    out: dict[str, float] = {"all": 0.0, "fallback": 0.0, "cache_hit": 0.0, "batches": 0.0}
    out["batch_calls"] = 0.0
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        value = line.split()[-1] if line and not line.startswith("#") else "0"
        if line.startswith("streamrec_serving_request_seconds_count") and "/recommend/" in line:
            out["all"] += float(value)
            out["fallback"] += float(value) if 'variant="fallback"' in line else 0.0
        elif line.startswith('streamrec_serving_result_cache_total{result="hit"}'):
            out["cache_hit"] += float(value)
        elif line.startswith("streamrec_serving_model_batches_total"):
            out["batches"] += float(value)
        elif line.startswith("streamrec_serving_model_batch_calls_total"):
            out["batch_calls"] += float(value)
    return out


def shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Shares of the answers between two ``served_counts`` that fell back / hit the cache,
    and the mean size of the batches of model calls made meanwhile (``batch_mean``)."""
    n = max(after["all"] - before["all"], 1.0)
    out = {s: (after[s] - before[s]) / n for s in ("fallback", "cache_hit")}
    batches = after["batches"] - before["batches"]
    out["batch_mean"] = (after["batch_calls"] - before["batch_calls"]) / batches if batches else 0.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Paced (open-loop) load against /recommend.")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True, help="requests per second")
    ap.add_argument("--duration", type=float, required=True, help="seconds")
    ap.add_argument("--conns", type=int, default=8, help="connections (requests in flight)")
    ap.add_argument("--users", required=True, help="comma-separated user ids")
    args = ap.parse_args()
    import uvloop

    users = args.users.split(",")
    result = uvloop.run(_paced(args.port, args.rate, args.duration, args.conns, users))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
