"""The rollout end to end on the real stack: Kafka, Redis, the stream worker (online
evaluation) and the API as processes, the closed-loop simulator driving traffic.

A random-ranking canary is rolled back at its first step; a better ALS passes every step and
becomes production; the simulator sees only 200s throughout. Thresholds are small so this
runs in a few minutes (production defaults are in core.config)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy.sparse import csr_matrix

from ingest.movielens import load_movielens
from models.als import ALSModel
from models.base import UserItems
from models.random_model import RandomModel
from models.registry import ModelRegistry
from rollout.controller import PROMOTED, ROLLED_BACK, RolloutController
from rollout.live_source import LiveMetricsSource
from rollout.simulator import Simulator, future_interactions, simulate_in_thread
from schemas.manifest import TrainingData
from streamrec import stack
from streamrec.stack.apps import ApiService
from tests.support.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def rollout_settings(settings, tmp_path):
    s = settings.model_copy(update={"data_dir": tmp_path / "data"}).with_sections(
        serve={
            "port": free_port(),
            "budget_ms": 5000.0,
            "alias_poll_s": 0.5,
            "admin_token": "e2e-admin-token",
        },
        stream={"metrics_port": free_port(), "flush_interval_s": 2.0},
        online_eval={"window_s": 120.0},
        rollout={
            "steps": "10,50,100",
            "min_samples": 150,
            "settle_s": 2.0,
            "poll_s": 1.0,
            "p99_slack_ms": 250.0,
        },
    )
    yield s
    stack.down(s, ["api", "stream"])


def _user_items(ml) -> UserItems:
    train = ml.subset("train")
    users, rows = np.unique(train.users, return_inverse=True)
    items = np.array(sorted({i.item_id for i in ml.catalog}), dtype=object)
    index = {x: j for j, x in enumerate(items)}
    cols = np.array([index[i] for i in train.items])
    m = csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), (len(users), len(items)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return UserItems(m, users.astype(object), items)


def _publish(registry: ModelRegistry, model, notes: str) -> int:
    return registry.publish(
        model, training_data=TrainingData(), params={}, metrics={}, notes=notes
    ).version


def test_a_bad_canary_is_rolled_back_and_a_better_one_promoted(rollout_settings):
    s = rollout_settings
    ml = load_movielens(s.cache_path)
    data = _user_items(ml)
    registry = ModelRegistry.from_settings(s.storage, s.model_name)
    # Offline hit@10 on the test split: weak ALS ~0.49, random ~0.16, ALS-32 ~0.72.
    weak = ALSModel.fit(data, factors=1, iterations=1, regularization=0.1, alpha=1.0)
    strong = ALSModel.fit(data, factors=32, iterations=10, regularization=0.1, alpha=1.0)
    v_weak = _publish(registry, weak, "weak ALS (1 factor)")
    v_random = _publish(registry, RandomModel(data.item_ids, seed=7), "random ranking")
    v_strong = _publish(registry, strong, "ALS, 32 factors")
    registry.promote(v_weak, reason="baseline", actor="test")

    stack.up(s, ["stream"])
    stack.up(s, ["api"])
    api = f"http://127.0.0.1:{s.serve.port}"
    test = ml.subset("test")
    sim = Simulator(
        s.kafka, s.simulate, api, future_interactions(test.users, test.items), rate=80, seed=1
    )
    stop = threading.Event()
    thread, result = simulate_in_thread(sim, stop=stop, duration_s=600)
    source = LiveMetricsSource.from_settings(s)
    outcomes = []
    try:
        # Let production warm up (model loaded, the worker consuming) before judging.
        deadline = time.monotonic() + 60
        while sim.stats.by_variant.get(f"production v{v_weak}") is None:
            assert time.monotonic() < deadline, f"no production answers: {sim.stats}"
            time.sleep(0.5)

        ctl = RolloutController(registry, source, s.rollout)
        ctl.request(v_random, actor="test")
        bad = ctl.run(on_outcome=outcomes.append, should_stop=_timeout(150))
        assert bad.kind == ROLLED_BACK, bad.message
        doc = registry.aliases()
        assert doc.canary is None and doc.production.version == v_weak
        decision = doc.history[-1]
        assert decision.action == "canary_clear" and decision.actor == "rollout"
        assert decision.evidence["rollout"]["step"] == 0  # the first step: 10%
        canary, prod = decision.evidence["canary"], decision.evidence["production"]
        assert canary["served"] >= 150 and prod["served"] >= 150
        assert canary["conversion_rate"] < prod["conversion_rate"]
        assert decision.evidence["test"]["p_value"] < 0.05

        # Requested through the admin API; a fresh controller (as after a restart) runs it.
        requested = httpx.post(
            f"{api}/admin/rollouts",
            json={"version": v_strong, "reason": "ALS-32 beats the weak ALS offline"},
            headers={"Authorization": "Bearer e2e-admin-token"},
            timeout=30,
        )
        assert requested.status_code == 202, requested.text
        ctl = RolloutController(registry, source, s.rollout)
        good = ctl.run(on_outcome=outcomes.append, should_stop=_timeout(200))
        assert good.kind == PROMOTED, good.message
        doc = registry.aliases()
        assert doc.production.version == v_strong and doc.canary is None
        steps = [h for h in doc.history if h.version == v_strong and h.actor == "rollout"]
        assert [h.action for h in steps] == ["canary", "canary_weight", "promote"]
        assert [h.weight for h in steps[:2]] == [10, 50]
        assert steps[1].evidence["decision"]["passed"] is True
        assert steps[2].evidence["canary"]["served"] >= 150
        current = httpx.get(
            f"{api}/admin/rollouts/current",
            headers={"Authorization": "Bearer e2e-admin-token"},
            timeout=30,
        ).json()
        assert current["rollout_id"] == requested.json()["rollout_id"]
        assert current["status"] == "promoted" and current["requested_by"] == "api-admin"
        assert [d["action"] for d in current["decisions"]] == [
            "request",
            "start",
            "advance",
            "promote",
        ]
    finally:
        stop.set()
        thread.join(60)
        source.close()
    stats = result[0]
    # Zero non-200 answers (and no failed connections) through both rollouts.
    assert stats.errors == 0, (stats.statuses, stats.first_errors)
    assert stats.by_variant[f"canary v{v_random}"].requests > 0
    assert stats.by_variant[f"canary v{v_strong}"].requests > 0
    # The stream worker exports the online evaluation as Prometheus counters.
    text = httpx.get(f"http://127.0.0.1:{s.stream.metrics_port}/metrics", timeout=10).text
    served = {
        (x.labels["variant"], x.labels["version"]): x.value
        for fam in text_string_to_metric_families(text)
        if fam.name == "streamrec_rollout_impressions"
        for x in fam.samples
        if x.name.endswith("_total")
    }
    assert served.get(("canary", str(v_strong)), 0) >= 150
    assert served.get(("production", str(v_weak)), 0) >= 150

    # The same actions from the shell, as an operator runs them.
    env = ApiService(s).environment()
    status = _cli(env, "rollout", "status", "reco")
    assert status.returncode == 0 and "promoted" in status.stdout, status.stderr
    missing = _cli(env, "rollout", "start", "reco", "999")
    assert missing.returncode != 0 and "no version 999" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1  # one line, no traceback
    sim_cli = _cli(env, "simulate", "--rate", "20/s", "--max-requests", "20")
    assert sim_cli.returncode == 0, sim_cli.stdout + sim_cli.stderr
    assert "20 requests" in sim_cli.stdout and "0 errors" in sim_cli.stdout


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamrec", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _timeout(seconds: float):
    end = time.monotonic() + seconds
    return lambda: time.monotonic() > end
