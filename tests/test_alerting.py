"""Alerting, statically: Alertmanager's routing (infra/alertmanager) passes ``amtool
check-config`` as shipped and as the stack renders it, routes every alert rule to the receiver
its severity names, and mutes a service's symptoms while its process is down; every rule
carries what routing and an on-call person need (a runbook section that exists); Prometheus'
config points at the configured Alertmanager. ``stack up`` of both is in
tests/test_observability_stack.py; the live delivery (Redis stopped under load -> a webhook
gets the page, then the resolution) in tests/test_observability_live.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from core.config import Settings
from schemas.errors import ConfigError
from streamrec.stack.alertmanager import AlertmanagerService
from streamrec.stack.prometheus import render_config

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "infra" / "alertmanager" / "alertmanager.yml"
RULES = ROOT / "infra" / "prometheus" / "rules"
# severity label of a rule -> the receiver that must get it
RECEIVER = {"page": "page", "warning": "ticket"}


def _rules() -> dict[str, dict]:
    return {
        r["alert"]: r
        for path in sorted(RULES.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for r in group["rules"]
        if "alert" in r
    }


@pytest.fixture
def amtool(alertmanager_bins: dict[str, str]):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [alertmanager_bins["amtool"], *args], capture_output=True, text=True, cwd=ROOT
        )

    return run


def test_amtool_accepts_the_shipped_and_the_rendered_config(amtool, tmp_path: Path) -> None:
    shipped = amtool("check-config", str(SHIPPED))
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    s = Settings(home=ROOT, data_dir=tmp_path).with_sections(
        alertmanager={"page_webhook_url": "https://events.example/page?token=x"}
    )
    svc = AlertmanagerService(s)
    svc.prepare()
    rendered = amtool("check-config", str(svc.config_path))
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    receivers = {r["name"]: r for r in yaml.safe_load(svc.config_path.read_text())["receivers"]}
    assert receivers["page"]["webhook_configs"] == [
        {"url": "https://events.example/page?token=x", "send_resolved": True}
    ]
    # No URL: the receiver has no integration (alerts stay in Alertmanager), not a bogus one.
    assert "webhook_configs" not in receivers["ticket"]
    assert svc.config_path.stat().st_mode & 0o077 == 0, "webhook URLs may carry tokens"
    assert f"--config.file={svc.config_path}" in svc.command()
    bad = s.with_sections(alertmanager={"ticket_webhook_url": SecretStr("hooks.example/x")})
    with pytest.raises(ConfigError, match="alertmanager_ticket_webhook_url"):
        AlertmanagerService(bad).prepare()


def test_every_rule_routes_to_the_receiver_of_its_severity(amtool) -> None:
    for name, rule in _rules().items():
        labels = {"alertname": name, **rule["labels"]}
        if labels["service"].startswith("{{"):  # templated from the job: one of them
            labels["service"] = "streamrec-api"
        args = [f"{k}={v}" for k, v in labels.items()]
        result = amtool("config", "routes", "test", f"--config.file={SHIPPED}", *args)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.split() == [RECEIVER[labels["severity"]]], (name, result.stdout)


def test_grouping_and_timers_are_deliberate() -> None:
    route = yaml.safe_load(SHIPPED.read_text())["route"]
    assert route["group_by"] == ["alertname", "service"]
    (page,) = [r for r in route["routes"] if r["receiver"] == "page"]
    # A page is sent sooner and repeated more often than a ticket.
    seconds = {"s": 1, "m": 60, "h": 3600}

    def s(value: str) -> int:
        return int(value[:-1]) * seconds[value[-1]]

    assert s(page["group_wait"]) < s(route["group_wait"])
    assert s(page["repeat_interval"]) < s(route["repeat_interval"])


def test_a_down_process_mutes_the_symptoms_of_its_own_service() -> None:
    rules = _rules()
    (inhibit,) = yaml.safe_load(SHIPPED.read_text())["inhibit_rules"]
    assert inhibit["source_matchers"] == ['alertname="StreamrecProcessDown"']
    assert inhibit["equal"] == ["service"]
    (target,) = inhibit["target_matchers"]
    pattern = re.fullmatch(r'alertname=~"(.+)"', target)
    assert pattern, target
    muted = {name for name in rules if re.fullmatch(pattern.group(1), name)}
    assert muted == {
        "StreamrecApiErrorRatioHigh",
        "StreamrecApiLatencyP99High",
        "StreamrecApiFallbackRatioHigh",
        "StreamrecConsumerLagHigh",
        "StreamrecFreshnessP99High",
    }
    # `equal: [service]` only mutes anything if the process-down alert's service (its job)
    # takes the values the symptom alerts carry.
    down = rules["StreamrecProcessDown"]
    assert down["labels"]["service"] == "{{ $labels.job }}"
    jobs = re.search(r'job=~"([^"]+)"', down["expr"]).group(1).split("|")
    assert {rules[name]["labels"]["service"] for name in muted} <= set(jobs)


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_says_who_gets_it_and_links_a_runbook_that_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    anchors = {_slug(h) for h in re.findall(r"(?m)^#+ (.+)$", readme)}
    for name, rule in _rules().items():
        assert rule["labels"]["severity"] in RECEIVER, name
        assert rule["labels"]["service"], name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        assert notes["runbook_url"] == f"README.md#{name.lower()}", name
        assert name.lower() in anchors, f"{name}: no README section #{name.lower()}"


def test_prometheus_is_pointed_at_the_configured_alertmanager() -> None:
    source = ROOT / "infra" / "prometheus" / "prometheus.yml"
    (manager,) = yaml.safe_load(source.read_text())["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == [f"127.0.0.1:{Settings().alertmanager.port}"]
    rendered = render_config(source, {}, alertmanager_port=19095)
    (manager,) = rendered["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["127.0.0.1:19095"]
