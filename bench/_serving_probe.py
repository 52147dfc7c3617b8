"""Summary of ``serving.probe``'s records over the paced (half-max) runs of
``bench/serving.py --probe``: where the slow requests spent their time.

For each server: the server-side latency (route entered to response sent) beside the load
generator's, the event loop's stalls (overshoots of a 1 ms sleep), the background work that
ran meanwhile, and for the requests slower than the probe's threshold the median of each
phase and which phase was the longest. Times are CLOCK_MONOTONIC (``time.perf_counter``) in
every process, so the paced runs' windows select the records.

    .venv/bin/python -m bench._serving_probe DIR   # again, on a kept run's records
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

# The request's marks in order; a gap is named by the phase it ends in.
PHASES = (
    "route",
    "features",
    "model",
    "queued",
    "batch_start",
    "batch_end",
    "delivered",
    "logged",
    "sent",
)
GAPS = {
    "features": "redis read",
    "model": "model resolved",
    "queued": "to batcher",
    "batch_start": "wait for batch",
    "batch_end": "batch runs",
    "delivered": "hand back",
    "logged": "fallback+log",
    "sent": "respond",
}


def _records(prefix: Path) -> list[dict]:
    rows: list[dict] = []
    for path in sorted(prefix.parent.glob(prefix.name + ".*")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line]
    return rows


def _inside(t: float, windows: list[tuple[float, float]]) -> bool:
    return any(a <= t <= b for a, b in windows)


def _q(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def summarise(prefix: Path, windows: list[tuple[float, float]]) -> list[str]:
    """Lines describing the probe records written under ``prefix`` within ``windows``."""
    rows = _records(prefix)
    if not rows:
        return [f"no probe records at {prefix}.*"]
    seconds = sum(b - a for a, b in windows) or 1.0
    lat = [
        took * 1000
        for r in rows
        if r["kind"] == "latencies"
        for t, took in r["rows"]
        if _inside(t, windows)
    ]
    stalls = [r for r in rows if r["kind"] == "lag" and _inside(r["t"], windows)]
    lags = [r["ms"] for r in stalls]
    # What the loop thread did during its stalls: ran Python, waited for a core, or
    # neither (off-CPU and not runnable: the GIL, or a blocking call).
    cpu = sum(r["cpu_ms"] for r in stalls)
    runq = sum(r["runq_ms"] for r in stalls)
    off = sum(lags) - cpu - runq
    big = [r for r in stalls if r["ms"] > 10]
    big_parts = [sum(r[k] for r in big) for k in ("ms", "cpu_ms", "runq_ms")]
    out = [
        f"  server side (route to sent): {len(lat)} requests, p50 {_q(lat, 0.5):.1f} / "
        f"p99 {_q(lat, 0.99):.1f} / max {max(lat, default=0):.1f} ms",
        f"  loop stalls > 2 ms: {len(lags) / seconds:.1f}/s, p50 {_q(lags, 0.5):.1f} / "
        f"max {max(lags, default=0):.1f} ms, {sum(lags) / seconds / 10:.2f}% of the time; "
        f"of the stalled time the loop ran {cpu / max(sum(lags), 1e-9):.0%}, waited for a core "
        f"{runq / max(sum(lags), 1e-9):.0%}, waited off-CPU (GIL, blocking call) "
        f"{off / max(sum(lags), 1e-9):.0%}",
        f"  stalls > 10 ms: {len(big)}, {big_parts[0]:.0f} ms: loop ran {big_parts[1]:.0f}, "
        f"waited for a core {big_parts[2]:.0f}, off-CPU "
        f"{big_parts[0] - big_parts[1] - big_parts[2]:.0f} ms",
    ]
    # Stalls in which the loop itself ran for long: these stay on a quiet machine. What
    # background work overlapped each one.
    spans = [r for r in rows if r["kind"] == "interval" and _inside(r["t"], windows)]
    for floor in (5.0, 10.0):
        ran = [r for r in stalls if r["cpu_ms"] - 1.0 > floor]  # the 1 ms sleep's own
        cause: dict[str, int] = {}
        for r in ran:
            end = r["t"] + r["ms"] / 1000 + 0.001
            names = {i["name"] for i in spans if i["t"] < end and i["end"] > r["t"]}
            for name in names or {"nothing timed"}:
                cause[name] = cause.get(name, 0) + 1
        out.append(
            f"  stalls with > {floor:g} ms of the loop's own CPU: {len(ran) / seconds:.2f}/s, "
            f"overlapping: " + ", ".join(f"{k} {v}" for k, v in sorted(cause.items()))
        )
    by_name: dict[str, list[tuple[float, float, float]]] = {}
    for r in rows:
        if r["kind"] == "interval" and _inside(r["t"], windows):
            row = ((r["end"] - r["t"]) * 1000, r["size"], r.get("cpu_ms", 0.0))
            by_name.setdefault(r["name"], []).append(row)
            if r.get("cpu_ms"):  # where a timed thread's wall time went
                wall = by_name.setdefault(r["name"] + " wall/cpu/runq", [])
                wall.append((row[0], r.get("runq_ms", 0.0), row[2]))
    for name, got in sorted(by_name.items()):
        if name.endswith("wall/cpu/runq"):
            tot = [sum(x[i] for x in got) for i in range(3)]
            out.append(
                f"  {name.split()[0]}'s thread: {tot[0]:.0f} ms wall = {tot[2]:.0f} CPU + "
                f"{tot[1]:.0f} waiting for a core + {tot[0] - tot[1] - tot[2]:.0f} asleep "
                "(the GIL)"
            )
            continue
        ms = [d for d, _, _ in got]
        size = statistics.mean(s for _, s, _ in got)
        cpu_ms = [c for _, _, c in got]
        out.append(
            f"  {name}: {len(got) / seconds:.1f}/s, p50 {_q(ms, 0.5):.2f} / p99 "
            f"{_q(ms, 0.99):.2f} / max {max(ms):.1f} ms"
            + (f", mean size {size:.1f}" if size else "")
            + (
                f"; its thread's CPU p50 {_q(cpu_ms, 0.5):.2f} / p99 {_q(cpu_ms, 0.99):.2f} / "
                f"max {max(cpu_ms):.1f} ms"
                if any(cpu_ms)
                else ""
            )
        )
    out.append(_overlaps(rows, windows, spans))
    slow = [
        r["marks"] for r in rows if r["kind"] == "slow" and _inside(r["marks"]["route"], windows)
    ]
    if not slow:
        out.append("  no slow requests in the paced runs")
        return out
    gaps: dict[str, list[float]] = {g: [] for g in GAPS}
    longest: dict[str, int] = {}
    for marks in slow:
        prev, worst, worst_ms = marks["route"], "", -1.0
        for phase in PHASES[1:]:
            if phase not in marks:
                continue
            ms = (marks[phase] - prev) * 1000
            gaps[phase].append(ms)
            if ms > worst_ms:
                worst, worst_ms = phase, ms
            prev = marks[phase]
        longest[GAPS[worst]] = longest.get(GAPS[worst], 0) + 1
    parts = [f"{GAPS[g]} {statistics.median(v):.1f}" for g, v in gaps.items() if v]
    out.append(
        f"  {len(slow)} slow requests (> threshold): median ms per phase: " + ", ".join(parts)
    )
    out.append(
        "  longest phase: "
        + ", ".join(f"{k} {v}" for k, v in sorted(longest.items(), key=lambda x: -x[1]))
    )
    return out


def _overlaps(rows: list[dict], windows: list[tuple[float, float]], spans: list[dict]) -> str:
    """The requests over 10 ms (issue 14's p99 target) by what overlapped each: a model
    batch over 4 ms of CPU, background work over 1 ms (sweep, polls, a collection). None of
    those: the loop was busy with other requests (queueing)."""

    def big(i: dict) -> bool:
        if i["name"].startswith("batch"):
            return i.get("cpu_ms", 0.0) > 4.0
        return i["end"] - i["t"] > 0.001

    spans = [i for i in spans if big(i)]
    causes: dict[str, int] = {}
    n = 0
    for r in rows:
        if r["kind"] != "latencies":
            continue
        for t, took in r["rows"]:
            if took <= 0.010 or not _inside(t, windows):
                continue
            n += 1
            names = {i["name"] for i in spans if i["t"] < t + took and i["end"] > t}
            key = " + ".join(sorted(names)) or "other requests (queueing)"
            causes[key] = causes.get(key, 0) + 1
    top = sorted(causes.items(), key=lambda x: -x[1])
    return f"  requests > 10 ms: {n}; overlapping: " + (
        ", ".join(f"{k} {v}" for k, v in top) or "-"
    )


def summarise_dir(folder: Path, labels: dict[str, str]) -> list[str]:
    """:func:`summarise` of every server probed in ``folder`` (``bench/serving.py --probe``
    leaves its records there, with each server's paced windows in ``windows.json``)."""
    windows = json.loads((folder / "windows.json").read_text())
    out = [f"probe records in {folder}"]
    for kind, spans in windows.items():
        if any(folder.glob(kind + ".*")):
            out.append(f"probe of {labels.get(kind, kind)} over its paced runs:")
            out += summarise(folder / kind, [(a, b) for a, b in spans])
    return out


def report_probes(console, folder: Path, res: dict, labels: dict[str, str]) -> None:
    """After ``bench/serving.py --probe``: keeps each server's paced windows beside its
    records in ``folder`` and prints the summary."""
    windows = {k: r["paced"]["windows"] for k, r in res.items() if "paced" in r}
    (folder / "windows.json").write_text(json.dumps(windows))
    for line in summarise_dir(folder, {k: labels.get(k, k) for k in windows}):
        console.print(line, highlight=False)


if __name__ == "__main__":
    sys.stdout.write("\n".join(summarise_dir(Path(sys.argv[1]), {})) + "\n")
