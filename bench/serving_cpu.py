"""CPU per request of ``/recommend`` (result cache off, every request runs the model) served
from this tree and from another tree of the repository, beside the bare FastAPI endpoint, in
one run: the same model, the same Redis, wrk runs alternating between the servers (issue 14's
same-run A/B of code changes). CPU seconds of each server's process tree per request answered
is what load on a shared machine inflates least; req/s is printed too, with the load average.

    git archive <commit> | tar -x -C /tmp/before    # the tree to compare against
    .venv/bin/python bench/serving_cpu.py --against /tmp/before [--runs 4] [--duration 6]

The budget is 5 s (``STREAMREC_SERVE_BUDGET_MS``) so that no answer falls back on a busy
machine: a fallback costs less than a model call and would flatter the loaded server.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import _load as load  # noqa: E402
from bench._serving_live import tree_cpu_s, worker_memory  # noqa: E402
from bench._serving_setup import cleanup, prepare, private_stack  # noqa: E402
from bench.serving import start_server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", type=Path, required=True, help="another tree of the repo")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--port", type=int, default=18190)
    ap.add_argument(
        "--paced",
        type=float,
        default=0.0,
        help="also p50/p99 at this rate (req/s), the servers' runs alternating",
    )
    args = ap.parse_args()
    if not (args.against / "streamrec" / "__main__.py").is_file():
        ap.error(f"--against: {args.against} is not a tree of this repository")
    load.ensure_wrk()

    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    settings, env, tmp = private_stack(
        STREAMREC_SERVE_RESULT_CACHE_SIZE="0", STREAMREC_SERVE_BUDGET_MS="5000"
    )
    kinds = {"this tree": REPO, f"{args.against}": args.against, "bare FastAPI": None}
    procs: dict[str, subprocess.Popen] = {}
    try:
        users = prepare(settings, console, [settings])
        for i, (kind, tree) in enumerate(kinds.items()):
            port = args.port + i
            procs[kind] = start_server("ours" if tree else "bare", port, 1, env, tree or REPO)
        ports = {kind: args.port + i for i, kind in enumerate(kinds)}
        for kind in kinds:  # warm: every user asked a few times
            load.wrk_max(ports[kind], users, 4, args.conns)
        loads = [os.getloadavg()[0]]
        cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
        rps: dict[str, list[float]] = {kind: [] for kind in kinds}
        batch: dict[str, list[float]] = {kind: [] for kind in kinds}  # mean model batch
        for _ in range(args.runs):
            for kind in kinds:
                t0 = tree_cpu_s(procs[kind].pid)
                before = load.served_counts(ports[kind]) if kinds[kind] else None
                r, n = load.wrk_run(ports[kind], users, args.duration, args.conns)
                cpu[kind].append((tree_cpu_s(procs[kind].pid) - t0) / max(n, 1) * 1000)
                rps[kind].append(r)
                if before is not None:
                    after = load.served_counts(ports[kind])
                    batch[kind].append(load.shares(before, after)["batch_mean"])
            loads.append(os.getloadavg()[0])
        paced = _paced(args, ports, users, kinds) if args.paced else {}
        memory = {kind: worker_memory(proc.pid) for kind, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(30)
        cleanup(settings)
        shutil.rmtree(tmp, ignore_errors=True)
    bare = statistics.median(cpu["bare FastAPI"])
    table = Table(
        title=f"/recommend, result cache off: CPU per request, {args.runs} alternating runs "
        f"(load avg {min(loads):.1f}-{max(loads):.1f})"
    )
    cols = ("server", "CPU ms/request (runs)", "vs bare", "max req/s (runs)", "mean batch")
    for col in (*cols, "RSS / PSS"):
        table.add_column(col, justify="right")
    for kind in kinds:
        c = statistics.median(cpu[kind])
        mem = ", ".join(f"{m['rss_mb']:.0f} / {m['pss_mb']:.0f} MB" for m in memory[kind])
        table.add_row(
            kind,
            f"{c:.3f} ({', '.join(f'{x:.2f}' for x in cpu[kind])})",
            f"{c / bare:.1f}x",
            f"{statistics.median(rps[kind]):.0f} ({', '.join(f'{x:.0f}' for x in rps[kind])})",
            f"{statistics.median(batch[kind]):.1f}" if batch[kind] else "-",
            mem,
        )
    console.print(table)
    mine, theirs = (statistics.median(cpu[k]) for k in list(kinds)[:2])
    console.print(f"this tree / {args.against}: {mine / theirs:.2f}x CPU per request")
    for kind, runs in paced.items():
        p50, p99 = ([r[q] for r in runs] for q in ("p50_ms", "p99_ms"))
        console.print(
            f"{kind} at {args.paced:.0f} req/s: p50 {statistics.median(p50):.2f} ms "
            f"({', '.join(f'{x:.1f}' for x in p50)}), p99 {statistics.median(p99):.1f} ms "
            f"({', '.join(f'{x:.1f}' for x in p99)})"
            + (
                f", mean batch {statistics.median(r['batch'] for r in runs):.1f}"
                if kinds[kind]
                else ""
            )
        )


def _paced(args: argparse.Namespace, ports: dict, users: list[str], kinds: dict) -> dict:
    """Each server's paced latencies at ``--paced`` req/s, ``--runs`` alternating runs."""
    out: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for _ in range(args.runs):
        for kind in kinds:
            before = load.served_counts(ports[kind]) if kinds[kind] else None
            out[kind].append(load.paced(ports[kind], args.paced, args.duration, users))
            if before is not None:
                after = load.served_counts(ports[kind])
                out[kind][-1]["batch"] = load.shares(before, after)["batch_mean"]
    return out


if __name__ == "__main__":
    main()
