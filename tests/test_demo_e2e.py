"""Model-behaviour / end-to-end test: the main job (`make demo`) on a subset of MovieLens
through the real Kafka, stream worker, Redis, trainer and API, asserting every stage."""

from __future__ import annotations

import io

import httpx
import pytest
import redis
from rich.console import Console

from schemas.redis_keys import RedisKeys
from streamrec import stack
from streamrec.demo import FRESH_ITEMS, run_demo
from tests.support.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def demo_settings(settings, tmp_path):
    s = settings.model_copy(update={"data_dir": tmp_path / "data"}).with_sections(
        serve={"port": free_port(), "budget_ms": 5000.0},
        stream={"metrics_port": free_port(), "flush_interval_s": 2.0},
    )
    yield s
    stack.down(s, ["api", "stream"])  # only the processes this test started


def test_demo_runs_every_stage_on_real_services(demo_settings):
    out = io.StringIO()
    ctx = run_demo(demo_settings, Console(file=out, width=120), n_users=40)
    text = out.getvalue()

    # 2. replay: every rating of the 40 users became a watch and a rate event.
    assert ctx.facts["replayed_events"] == 2 * len(ctx.ml)
    assert len(set(ctx.ml.users)) == 40
    # 3. stream: features of every replayed user are in Redis.
    # (in the slot of the user's Kafka partition, where serving reads them)
    keys = RedisKeys(demo_settings.redis.key_prefix, demo_settings.kafka.topic_partitions)
    r = redis.Redis.from_url(demo_settings.redis.url, decode_responses=True)
    for user in set(ctx.ml.users):
        n_train = int((ctx.ml.users == user).sum())
        assert int(r.hget(keys.user_slot(user).user_stats(user), "n_watch")) == n_train
    # 4. train: version 1 published, the two-stage model beats popularity on the holdout.
    assert ctx.facts["version"] == 1
    metrics = ctx.facts["metrics"]
    assert metrics["als+lgbm"]["ndcg@10"] > metrics["popularity"]["ndcg@10"]
    assert "Holdout metrics" in text
    # 5. serve: known users get personalised answers from the production model.
    for user in ctx.users:
        answer = ctx.facts[f"answer:{user}"]
        assert answer["variant"] == "production" and answer["model_version"] == 1
        seen = set(ctx.ml.items[ctx.ml.users == user])
        assert not seen & set(answer["items"])  # already-watched items are filtered
    # 6. fresh events: a brand-new user goes from popularity to personalised results.
    before, after = ctx.facts["fresh_before"], ctx.facts["fresh_after"]
    assert before["variant"] == "fallback" and after["variant"] == "production"
    assert not set(FRESH_ITEMS) & set(after["items"])
    assert "demo finished" in text
    # 7. the API keeps running and speaks the CMU course's plain format.
    api = f"http://127.0.0.1:{demo_settings.serve.port}/recommend/{ctx.users[0]}"
    as_json = httpx.get(api, params={"k": 5}, timeout=10).json()
    plain = httpx.get(api, params={"format": "text", "k": 5}, timeout=10)
    assert plain.status_code == 200 and as_json["variant"] == "production"
    assert plain.text == ",".join(as_json["items"])
