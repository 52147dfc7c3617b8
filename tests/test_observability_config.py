"""Observability files, statically: Prometheus' config and rules pass promtool (and the rules'
unit tests), the stack renders the config onto the configured ports, the dashboards are
what the generator writes and are well-formed Grafana JSON, and the registry facts the API
exports come out right. The live check (a real Prometheus scraping real processes) is
tests/test_observability_live.py."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from core.config import Settings
from schemas.manifest import (
    AliasChange,
    AliasDocument,
    ArtifactInfo,
    CanaryAlias,
    ModelManifest,
    ProductionAlias,
    TrainingData,
)
from serving.registry_metrics import RegistryFacts
from streamrec.stack.prometheus import JOB_PORTS, PrometheusService, render_config

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "infra" / "prometheus"
GRAFANA = ROOT / "infra" / "grafana"


@pytest.fixture
def promtool(prometheus_bins: dict[str, str]):
    """promtool, installed with Prometheus' package when missing (never skipped)."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [prometheus_bins["promtool"], *args], capture_output=True, text=True, cwd=ROOT
        )

    return run


def _generator():
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- Prometheus ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config", ["infra/prometheus/prometheus.yml", "infra/compose/prometheus.yml"]
)
def test_promtool_accepts_the_configs(config: str, promtool) -> None:
    result = promtool("check", "config", config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_rules_and_their_unit_tests_pass(promtool) -> None:
    rules = sorted(str(p) for p in (PROM / "rules").glob("*.yml"))
    checked = promtool("check", "rules", *rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = sorted(str(p) for p in (PROM / "tests").glob("*.test.yml"))
    result = promtool("test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_required_alert_exists_and_has_a_unit_test() -> None:
    groups = yaml.safe_load((PROM / "rules" / "streamrec-alerts.yml").read_text())["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    required = {
        "StreamrecApiErrorRatioHigh": "streamrec_serving_request_seconds_count",
        "StreamrecApiLatencyP99High": "streamrec_serving_request_seconds_bucket",
        "StreamrecApiFallbackRatioHigh": "streamrec_serving_fallbacks_total",
        "StreamrecConsumerLagHigh": "streamrec_stream_consumer_lag",
        "StreamrecDeadLetterRateHigh": "streamrec_stream_dead_letters_total",
        "StreamrecFreshnessP99High": "streamrec_stream_freshness_seconds_bucket",
        "StreamrecModelTooOld": "streamrec_model_created_timestamp_seconds",
        "StreamrecModelRolledBack": "streamrec_alias_changes_total",
        "StreamrecProcessDown": "up{",
    }
    for name, metric in required.items():
        assert name in alerts, name
        assert metric in alerts[name]["expr"], (name, alerts[name]["expr"])
        assert alerts[name]["labels"]["severity"] in {"page", "warning"}
        assert alerts[name]["annotations"]["summary"]
    tests = yaml.safe_load((PROM / "tests" / "streamrec-alerts.test.yml").read_text())["tests"]
    fired, quiet = set(), set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fired >= set(alerts), f"no firing case: {set(alerts) - fired}"
    assert quiet >= set(alerts), f"no quiet case: {set(alerts) - quiet}"


def test_stack_renders_the_repo_config_onto_the_configured_ports(tmp_path: Path, promtool) -> None:
    s = Settings(home=ROOT, data_dir=tmp_path).with_sections(
        serve={"port": 18082},
        stream={"metrics_port": 16066},
        rollout={"metrics_port": 16067},
        kafka={"jmx_exporter_port": 19404},
        observability={"redis_exporter_port": 19121, "prometheus_port": 19090},
    )
    svc = PrometheusService(s)
    svc.prepare()
    config = yaml.safe_load(svc.config_path.read_text())
    targets = {
        job["job_name"]: [t for st in job["static_configs"] for t in st["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {
        "streamrec-api": ["127.0.0.1:18082"],
        "streamrec-stream": ["127.0.0.1:16066"],
        "streamrec-rollout": ["127.0.0.1:16067"],
        "kafka": ["127.0.0.1:19404"],
        "redis": ["127.0.0.1:19121"],
        "prometheus": ["127.0.0.1:19090"],
    }
    (rules,) = config["rule_files"]
    assert Path(rules).is_absolute() and list(Path(rules).parent.glob(Path(rules).name))
    assert f"--config.file={svc.config_path}" in svc.command()
    # the rendered copy is as valid as the source
    result = promtool("check", "config", str(svc.config_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_job_port_has_a_setting_and_the_repo_config_uses_the_defaults() -> None:
    defaults = Settings()
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(JOB_PORTS)
    for job, field in JOB_PORTS.items():
        (target,) = jobs[job]["static_configs"][0]["targets"]
        assert target == f"127.0.0.1:{attrgetter(field)(defaults)}", job


def test_interval_override_and_port_zero(tmp_path: Path) -> None:
    config = render_config(
        PROM / "prometheus.yml", {"streamrec-stream": 0, "streamrec-api": 1234}, interval_s=1
    )
    assert config["global"]["scrape_interval"] == config["global"]["evaluation_interval"] == "1s"
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert jobs["streamrec-stream"] == []  # port 0 = "pick a free one": nothing to scrape
    assert jobs["streamrec-api"] == ["127.0.0.1:1234"]
    assert jobs["kafka"] == ["127.0.0.1:9404"]  # not in the mapping: left as written


def test_compose_config_has_the_same_rules_and_jobs_by_the_same_names() -> None:
    native = yaml.safe_load((PROM / "prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "infra" / "compose" / "prometheus.yml").read_text())
    assert compose["rule_files"] == native["rule_files"]
    native_jobs = {j["job_name"] for j in native["scrape_configs"]}
    compose_jobs = {j["job_name"] for j in compose["scrape_configs"]}
    assert {"streamrec-api", "streamrec-stream", "prometheus"} <= compose_jobs
    assert compose_jobs - native_jobs == {"minio"}  # the only compose-only service


# --- Grafana ---------------------------------------------------------------------------------


def _dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in (GRAFANA / "dashboards").glob("*.json")}


def test_dashboards_are_what_the_generator_writes(tmp_path: Path) -> None:
    gen = _generator()
    assert gen.main(["--check"]) == 0, "run `python infra/grafana/generate.py`"
    assert set(_dashboards()) == set(gen.dashboards())
    # --check really compares: a stale file is reported.
    gen.main(["--out", str(tmp_path)])
    (tmp_path / "streamrec-api.json").write_text("{}")
    assert gen.main(["--check", "--out", str(tmp_path)]) == 1


def test_dashboards_are_well_formed_for_the_provisioned_data_source() -> None:
    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = sources["datasources"]
    boards = _dashboards()
    assert {b["title"] for b in boards.values()} == {
        "streamrec / API",
        "streamrec / Streams",
        "streamrec / Models & rollout",
        "streamrec / Kafka broker",
    }
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        assert board["schemaVersion"] >= 36, name
        (var,) = board["templating"]["list"]
        assert var["type"] == "datasource" and var["query"] == source["type"] == "prometheus"
        assert var["current"]["value"] == source["uid"], name
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
        cells: set[tuple[int, int]] = set()
        for p in board["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24, (name, p["title"])
            cell = {
                (x, y)
                for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])
            }
            assert not cells & cell, f"{name}: {p['title']} overlaps another panel"
            cells |= cell
            if p["type"] == "row":
                continue
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert p["targets"], (name, p["title"])
            refs = [t["refId"] for t in p["targets"]]
            assert len(set(refs)) == len(refs)
            for t in p["targets"]:
                assert t["expr"].strip() and t["datasource"] == p["datasource"]
                assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]


def test_issue_panels_cover_what_the_issue_asks_for() -> None:
    exprs = {
        b["title"]: " ".join(t["expr"] for p in b["panels"] for t in p.get("targets", []))
        for b in _dashboards().values()
    }
    wanted = {
        "streamrec / API": [
            "by (variant)",
            "histogram_quantile",
            'status=~"5.."',
            "fallbacks_total",
            "model_cache_hits",
        ],
        "streamrec / Streams": [
            "event_type",
            "dead_letters",
            "consumer_lag",
            "freshness",
            "flush_duration",
            "redis_memory_used_bytes",
        ],
        "streamrec / Models & rollout": [
            "streamrec_canary_weight",
            "conversions",
            "streamrec_model_offline_metric",
            "streamrec_model_created_timestamp_seconds",
        ],
        "streamrec / Kafka broker": ["bytesin", "bytesout", "totaltimems", "partitioncount"],
    }
    for title, needles in wanted.items():
        for needle in needles:
            assert needle in exprs[title], (title, needle)


def test_provisioning_points_grafana_at_the_dashboards() -> None:
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "streamrec.yml").read_text()
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


# --- registry facts exported by the API ------------------------------------------------------


def _card(version: int, created: datetime, ndcg: float) -> ModelManifest:
    return ModelManifest(
        name="reco",
        version=version,
        kind="als+lgbm",
        created_at=created,
        code_version="test",
        training_data=TrainingData(),
        metrics={"als+lgbm": {"ndcg@10": ndcg}, "popularity": {"ndcg@10": 0.01}},
        artifacts={"a.json": ArtifactInfo(sha256="0" * 64, bytes=1, format="json")},
    )


def _sample(text: str, family: str, /, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"{re.escape(family)}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return None


def test_registry_facts_follow_the_alias_document() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    doc = AliasDocument(
        name="reco",
        revision=5,
        production=ProductionAlias(version=2, since=now),
        canary=CanaryAlias(version=3, weight=10, rollout_id="r1", since=now),
        history=[
            AliasChange(at=now, action=a, version=v)
            for a, v in [
                ("publish", 1),
                ("publish", 2),
                ("promote", 2),
                ("publish", 3),
                ("canary", 3),
                ("rollback", 1),
            ]
        ],
    )
    facts = RegistryFacts("reco")
    registry = CollectorRegistry()
    registry.register(facts)
    assert "streamrec_model_live_version{" not in generate_latest(registry).decode()  # no doc yet
    facts.update(doc, {2: _card(2, now, 0.31), 3: _card(3, now, 0.35)})
    text = generate_latest(registry).decode()
    assert _sample(text, "streamrec_model_live_version", name="reco", variant="production") == 2
    assert _sample(text, "streamrec_model_live_version", name="reco", variant="canary") == 3
    assert (
        _sample(
            text,
            "streamrec_model_created_timestamp_seconds",
            name="reco",
            version="2",
            variant="production",
        )
        == now.timestamp()
    )
    assert (
        _sample(
            text,
            "streamrec_model_offline_metric",
            name="reco",
            version="3",
            variant="canary",
            metric="ndcg@10",
        )
        == 0.35
    )
    assert "popularity" not in text  # baselines of the card are not the version's metrics
    assert _sample(text, "streamrec_canary_weight", name="reco") == 10
    assert _sample(text, "streamrec_alias_changes_total", name="reco", action="publish") == 3
    assert _sample(text, "streamrec_alias_changes_total", name="reco", action="rollback") == 1

    # The canary ends: its series go away at once instead of lingering.
    doc2 = doc.model_copy(update={"canary": None, "revision": 6})
    facts.update(doc2, {})
    text = generate_latest(registry).decode()
    assert _sample(text, "streamrec_canary_weight", name="reco") == 0
    assert _sample(text, "streamrec_model_live_version", name="reco", variant="canary") is None
    assert 'version="3"' not in text
