"""``bench/streams.py`` as its users run it, on the real stack: the freshness-only mode
(issue 20: it used to end in ``statistics.StatisticsError``) prints every run, the run after
a backlog, and both bare baselines. Nothing here is timed: the figures are the benchmark's,
read on a quiet machine, not asserted on a shared one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_freshness_only_mode_reports_every_run(stack: Settings) -> None:
    cmd = [sys.executable, "bench/streams.py", "--runs", "0", "--freshness-runs", "2"]
    cmd += ["--freshness-backlog", "500", "--seconds", "2", "--rate", "500"]
    cmd += ["--engines", "confluent", "--warmup-seconds", "1"]
    env = {**os.environ, "COLUMNS": "300"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    assert "warm-up: 1 s of paced load, not measured" in out
    assert "freshness run 1 (single, confluent): worker p50 / p99 / max" in out
    assert "freshness run 2 (single, confluent, after a 500-event backlog)" in out
    # Both bare consumers measured in the same run, and the table's per-run rows.
    assert out.count("(per-message poll ") == 2
    assert "freshness p50 / p99 / max @ 500/s, run 2 (after a 500-event backlog)" in out
    assert "p99 <= 1.5x" in out
    assert "throughput, sessions" not in out  # --runs 0: freshness only
