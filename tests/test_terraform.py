"""Code tests of terraform/: the CI checks (fmt, validate where possible, checkov) pass and
have teeth, and the HCL is wired consistently (python-hcl2; ``terraform validate`` needs the
AWS provider, which this machine cannot download; see infra/terraform-ci.sh)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
from redis.connection import SSLConnection, parse_url

from core.config import Settings, flat_names
from schemas.topics import TOPICS
from serving.cluster_reader import ClusterReader
from serving.redis_reader import RedisReader
from streamrec.stack.cluster import client_env

ROOT = Path(__file__).resolve().parent.parent
TF = ROOT / "terraform"
SCRIPT = ROOT / "infra" / "terraform-ci.sh"
MODULES = sorted(p for p in (TF / "modules").iterdir() if p.is_dir())
ROOTS = [TF / "examples" / "aws"]
ALL_DIRS = [*MODULES, *ROOTS]


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps the quotes of labels and string literals; drop them."""
    if isinstance(value, dict):
        return {
            _unquote(k): _unquote(v)
            for k, v in value.items()
            if k not in ("__is_block__", "__comments__")
        }
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@cache
def _blocks(directory: Path) -> dict[str, list[dict[str, Any]]]:
    merged: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as f:
            for kind, items in _unquote(hcl2.load(f)).items():
                merged.setdefault(kind, []).extend(items)
    return merged


def _named(directory: Path, kind: str) -> dict[str, dict[str, Any]]:
    return {name: body for item in _blocks(directory).get(kind, []) for name, body in item.items()}


def _text(directory: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(directory.glob("*.tf")))


def _resource(directory: Path, rtype: str, name: str) -> dict[str, Any]:
    for item in _blocks(directory).get("resource", []):
        if rtype in item and name in item[rtype]:
            return item[rtype][name]
    raise AssertionError(f"{directory.name}: no {rtype}.{name}")


def _run_ci(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=1800, check=False
    )


# --- the CI checks -------------------------------------------------------------------------
# Cold, the script first builds terraform (~3 min on 2 cores) and installs checkov (~1 min).
@pytest.mark.timeout(1800)
def test_ci_checks_pass_on_the_repository():
    """fmt -check and checkov must pass; validate runs where the provider is available and
    otherwise says why it did not (installs terraform + checkov into .cache/ if missing)."""
    result = _run_ci()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "terraform-ci: fmt: ok" in out
    assert re.search(r"terraform-ci: checkov: ok: \d+ passed, 0 failed, \d+ skipped", out), out
    validated = re.search(r"terraform-ci: validate \S+: ok", out)
    skipped = re.search(r"terraform-ci: validate: SKIPPED: .*provider is not available", out)
    assert validated or skipped, out


@pytest.mark.timeout(1800)
def test_ci_checks_fail_on_bad_code(tmp_path: Path):
    """The same script rejects misformatted code and a public, unencrypted bucket."""
    (tmp_path / "main.tf").write_text(
        'resource "aws_s3_bucket" "open" {\n'
        '  bucket = "streamrec-open"\n'
        '    acl    = "public-read"\n'  # misindented: fmt -check must fail
        "}\n"
    )
    result = _run_ci(str(tmp_path))
    out = result.stdout + result.stderr
    assert result.returncode == 1, out[-4000:]
    assert "terraform-ci: fmt: FAILED" in out
    assert re.search(r"terraform-ci: checkov: FAILED: \d+ passed, [1-9]\d* failed", out), out


def test_every_checkov_skip_is_justified():
    skips = []
    for path in TF.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                match = re.search(r"#checkov:skip=(CKV2?_AWS_\d+):(.+)", line)
                assert match, f"{path}: malformed skip {line.strip()!r}"
                assert len(match.group(2).split()) >= 6, f"{path}: unjustified {match.group(1)}"
                skips.append(match.group(1))
    assert skips, "the skips exist and are checked here (remove this if none are needed)"


# --- wiring (what `terraform validate` would catch first) ------------------------------------
@pytest.mark.parametrize("directory", ALL_DIRS, ids=lambda p: p.name)
def test_variables_and_outputs_are_documented(directory: Path):
    for name, body in _named(directory, "variable").items():
        assert body.get("description"), f"{directory.name}: variable {name} has no description"
        assert body.get("type"), f"{directory.name}: variable {name} has no type"
    outputs = _named(directory, "output")
    assert outputs, f"{directory.name}: no outputs"
    for name, body in outputs.items():
        assert body.get("description"), f"{directory.name}: output {name} has no description"


@pytest.mark.parametrize("directory", ALL_DIRS, ids=lambda p: p.name)
def test_references_resolve(directory: Path):
    text = re.sub(r"#.*", "", _text(directory))  # comments may mention anything
    variables = set(_named(directory, "variable"))
    locals_ = {k for item in _blocks(directory).get("locals", []) for k in item}
    for ref in set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)", text)):
        assert ref in variables, f"{directory.name}: var.{ref} is not declared"
    for ref in set(re.findall(r"\blocal\.([A-Za-z_][A-Za-z0-9_-]*)", text)):
        assert ref in locals_, f"{directory.name}: local.{ref} is not defined"
    calls = _named(directory, "module")
    for name, attr in set(re.findall(r"\bmodule\.([a-z_]+)\.([a-z_]+)", text)):
        assert name in calls, f"{directory.name}: module.{name} is not called"
        source = (directory / calls[name]["source"]).resolve()
        assert attr in _named(source, "output"), f"module.{name} has no output {attr}"


@pytest.mark.parametrize("directory", ROOTS, ids=lambda p: p.name)
def test_module_calls_pass_exactly_the_declared_variables(directory: Path):
    calls = _named(directory, "module")
    assert {"msk", "redis", "storage", "ecs", "observability"} <= set(calls)
    for name, call in calls.items():
        source = (directory / call["source"]).resolve()
        assert source in MODULES, f"module {name}: {call['source']} is not one of ours"
        declared = _named(source, "variable")
        passed = set(call) - {"source", "depends_on", "providers", "count", "for_each"}
        assert passed <= set(declared), f"module {name}: unknown {passed - set(declared)}"
        required = {v for v, body in declared.items() if "default" not in body}
        assert required <= passed, f"module {name}: missing {required - passed}"


# --- what the issue asks of each piece --------------------------------------------------------
def test_msk_documents_the_topics_streamrec_creates():
    msk = TF / "modules" / "msk"
    text = _text(msk)
    for spec in TOPICS:
        assert f'"${{var.topic_prefix}}.{spec.name}"' in text, f"topic {spec.name} undocumented"
    # Single-partition and compacted topics stay so in the documentation.
    assert re.search(r"dead_letter\"\s*=\s*merge\(local.event_topic, \{ partitions = 1 \}", text)
    assert re.search(r"catalog\"\s*=\s*\{ partitions = 1, cleanup_policy = \"compact\"", text)
    cluster = _resource(msk, "aws_msk_cluster", "this")
    tls = cluster["encryption_info"][0]["encryption_in_transit"][0]
    assert tls["client_broker"] == "TLS" and tls["in_cluster"] is True
    assert cluster["client_authentication"][0]["unauthenticated"] is False


def test_redis_is_clustered_encrypted_with_a_secret_token():
    redis = TF / "modules" / "redis"
    group = _resource(redis, "aws_elasticache_replication_group", "this")
    family = next(i for i in _blocks(redis)["locals"] if "parameter_group_name" in i)
    assert group["parameter_group_name"] == "${local.parameter_group_name}"
    assert family["parameter_group_name"].endswith(".cluster.on")
    assert group["num_node_groups"] == "${var.shards}"
    assert group["at_rest_encryption_enabled"] is True
    assert group["transit_encryption_enabled"] is True
    assert group["automatic_failover_enabled"] is True
    assert "aws_secretsmanager_secret_version.auth_token" in group["auth_token"]


def test_bucket_is_versioned_encrypted_private_with_snapshot_lifecycle():
    storage = TF / "modules" / "storage"
    versioning = _resource(storage, "aws_s3_bucket_versioning", "this")
    assert versioning["versioning_configuration"][0]["status"] == "Enabled"
    sse = _resource(storage, "aws_s3_bucket_server_side_encryption_configuration", "this")
    assert sse["rule"][0]["apply_server_side_encryption_by_default"][0]["sse_algorithm"] == (
        "aws:kms"
    )
    block = _resource(storage, "aws_s3_bucket_public_access_block", "this")
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls"):
        assert block[flag] is True, flag
    assert block["restrict_public_buckets"] is True
    rules = _resource(storage, "aws_s3_bucket_lifecycle_configuration", "this")["rule"]
    snapshots = next(r for r in rules if r["id"] == "expire-old-snapshots")
    # The layout of schemas/snapshots.py: <prefix>/events/...
    assert snapshots["filter"][0]["prefix"] == "${var.prefix}/events/"
    assert snapshots["expiration"][0]["days"] == "${var.snapshot_retention_days}"


def test_stream_workers_follow_the_partitions_and_api_autoscales():
    ecs = TF / "modules" / "ecs"
    stream = _resource(ecs, "aws_ecs_service", "stream")
    assert stream["desired_count"] == "${local.stream_workers}"
    workers = next(i["stream_workers"] for i in _blocks(ecs)["locals"] if "stream_workers" in i)
    assert "var.topic_partitions" in workers
    policies = [
        _resource(ecs, "aws_appautoscaling_policy", name) for name in ("api_requests", "api_cpu")
    ]
    assert all(p["policy_type"] == "TargetTrackingScaling" for p in policies)
    api = _resource(ecs, "aws_ecs_service", "api")
    assert api["load_balancer"][0]["container_port"] == "${local.api_port}"
    rule = _resource(ecs, "aws_cloudwatch_event_rule", "train")
    assert rule["schedule_expression"] == "${var.train_schedule}"


def test_task_environment_uses_real_settings_and_real_subcommands():
    ecs = TF / "modules" / "ecs"
    fields = {f"STREAMREC_{name.upper()}" for name in flat_names()}
    used = set(re.findall(r"\bSTREAMREC_[A-Z0-9_]+", _text(ecs)))
    assert used and used <= fields, sorted(used - fields)
    from streamrec.cli import SUBCOMMANDS

    commands = re.findall(r'command\s*=\s*\["([a-z]+)"', _text(ecs))
    assert {"serve", "stream"} <= set(commands)
    assert set(commands) <= set(SUBCOMMANDS)
    train = _named(ecs, "variable")["train_command"]["default"]
    assert train[0] in SUBCOMMANDS


def test_allow_statements_grant_no_wildcard_actions():
    """Least privilege: no `service:*` in any IAM allow statement (the KMS key policy's
    account-root statement is AWS's default and is not an IAM policy)."""
    for directory in ALL_DIRS:
        for item in _blocks(directory).get("data", []):
            for name, doc in item.get("aws_iam_policy_document", {}).items():
                for st in doc.get("statement", []):
                    if st.get("effect", "Allow") != "Allow" or name == "kms":
                        continue
                    wild = [a for a in st.get("actions", []) if a == "*" or a.endswith(":*")]
                    assert not wild, f"{directory.name}/{name}: {wild}"


@pytest.mark.timeout(1800)
def test_terraform_binary_is_the_pinned_mpl_release():
    """The CI script builds exactly terraform 1.5.7 (the last MPL-2.0 release)."""
    terraform = Settings().cache_path / "bin" / "terraform"
    if not terraform.exists():  # run alone: let the script install it first
        _run_ci()
    out = subprocess.run([str(terraform), "version"], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0] == "Terraform v1.5.7"


# --- what the tasks are told about the engines (issue 12) -------------------------------------
# Each STREAMREC_* value an ECS task gets is traced through the example root to the module
# output it comes from, and that expression is evaluated by terraform itself (`console` in an
# empty directory: no provider needed), with the modules' defaults or the values given.
EXAMPLE = ROOTS[0]
ECS = TF / "modules" / "ecs"


@cache
def _raw(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """Like _blocks, but string literals keep their quotes (they are HCL expressions)."""
    merged: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as f:
            for kind, items in hcl2.load(f).items():
                merged.setdefault(kind, []).extend(items)
    return merged


def _hcl(value: Any) -> str:
    """A python-hcl2 value as an HCL expression."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_hcl(v) for v in value) + "]"
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return value[2:-1]
    return value  # a quoted string or template


def _resolve(directory: Path, expr: str, given: dict[str, Any], call: dict[str, Any]) -> str:
    """``expr`` of module ``directory`` with every var./local./module. reference replaced by
    its expression: ``given`` (reference -> python value, in any module) first, then what
    the root passes (``call``), then the variable's default."""
    raw = _raw(directory)
    local_values = {k: v for item in raw.get("locals", []) for k, v in item.items()}
    variables = {_unquote(k): v for item in raw.get("variable", []) for k, v in item.items()}

    def one(match: re.Match[str]) -> str:
        ref = match.group(0)
        if ref in given:
            return json.dumps(given[ref])  # python -> HCL literal (strings, numbers, lists)
        kind, name = ref.split(".", 1)
        if kind == "local":
            return f"({_resolve(directory, _hcl(local_values[name]), given, call)})"
        if kind == "module":
            module, output = name.split(".")
            return f"({_output(module, output, given)})"
        if name in call:
            return f"({_resolve(EXAMPLE, _hcl(call[name]), given, {})})"
        assert "default" in variables[name], f"{directory.name}: give a value for {ref}"
        return _hcl(variables[name]["default"])

    return re.sub(r"\b(?:var|local)\.[A-Za-z_][\w-]*|\bmodule\.[a-z_]+\.[a-z_]+", one, expr)


def _call(module: str) -> dict[str, Any]:
    """The example root's ``module "<module>"`` block (arguments as raw expressions)."""
    return next(c[f'"{module}"'] for c in _raw(EXAMPLE)["module"] if f'"{module}"' in c)


def _output(module: str, output: str, given: dict[str, Any]) -> str:
    """The expression of the example root's ``module.<module>.<output>``, resolved."""
    call = _call(module)
    source = (EXAMPLE / _unquote(call["source"])).resolve()
    outputs = {_unquote(k): v for item in _raw(source)["output"] for k, v in item.items()}
    return _resolve(source, _hcl(outputs[output]["value"]), given, call)


def _terraform_eval(expr: str) -> Any:
    terraform = Settings().cache_path / "bin" / "terraform"
    if not terraform.exists():  # run alone: let the CI script build it first
        _run_ci()
    with tempfile.TemporaryDirectory() as empty:
        out = subprocess.run(
            [str(terraform), "console", "-no-color"],
            input=f"jsonencode({expr})\n",
            capture_output=True,
            text=True,
            cwd=empty,
            env={**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null"},
            check=False,
        )
    assert out.returncode == 0, f"{expr}: {out.stderr}"
    return json.loads(json.loads(out.stdout))


def _task_env(name: str, **given: Any) -> Any:
    """The value of STREAMREC_<name> in the ECS tasks of the example root."""
    env = next(i["environment"] for i in _blocks(ECS)["locals"] if "environment" in i)
    match = re.search(rf"\b{name}\s*=\s*([^,}}]+)", env)
    assert match, f"{name} is not in the tasks' environment"
    return _terraform_eval(_resolve(ECS, match.group(1).strip(), given, _call("ecs")))


def test_tasks_get_every_setting_the_clustered_stack_gives_its_clients():
    """What `stack up --topology cluster` tells clients is what a deployment must say too."""
    env = next(i["environment"] for i in _blocks(ECS)["locals"] if "environment" in i)
    secrets = next(i["secrets"] for i in _blocks(ECS)["locals"] if "secrets" in i)
    given = set(re.findall(r"\b(STREAMREC_[A-Z0-9_]+)\s*=", env))
    given |= {secret["name"] for secret in secrets}  # STREAMREC_REDIS_URL
    assert set(client_env(Settings())) <= given, sorted(set(client_env(Settings())) - given)


def test_tasks_speak_the_cluster_protocol_to_the_cluster_mode_redis():
    """STREAMREC_REDIS_CLUSTER follows the replication group's parameter group family."""
    group = _resource(TF / "modules" / "redis", "aws_elasticache_replication_group", "this")
    assert group["parameter_group_name"] == "${local.parameter_group_name}"
    assert _task_env("STREAMREC_REDIS_CLUSTER") == "true"
    family = "local.parameter_group_name"
    assert _task_env("STREAMREC_REDIS_CLUSTER", **{family: "default.redis7"}) == "false"
    assert (
        Settings()
        .with_sections(redis={"cluster": _task_env("STREAMREC_REDIS_CLUSTER")})
        .redis.cluster
        is True
    )


def test_stream_worker_waits_for_a_replica_when_shards_have_one():
    """The worker's WAIT (STREAMREC_REDIS_MIN_REPLICAS_ACK) is 1 with replicas, 0 without."""
    assert _task_env("STREAMREC_REDIS_MIN_REPLICAS_ACK") == "1"  # 1 replica per shard
    for replicas, ack in ((0, "0"), (1, "1"), (2, "1")):
        given = {"var.replicas_per_shard": replicas}
        assert _task_env("STREAMREC_REDIS_MIN_REPLICAS_ACK", **given) == ack, replicas


def test_topics_get_the_replication_the_brokers_are_configured_with():
    msk = TF / "modules" / "msk"
    properties = _resource(msk, "aws_msk_configuration", "this")["server_properties"]
    assert "default.replication.factor=${var.replication_factor}" in properties
    assert "min.insync.replicas=${var.min_insync_replicas}" in properties
    assert _task_env("STREAMREC_TOPIC_REPLICATION_FACTOR") == "3"
    assert _task_env("STREAMREC_TOPIC_MIN_INSYNC_REPLICAS") == "2"
    # The precondition refuses more replicas than brokers and min ISR = replicas.
    (rule,) = _resource(msk, "aws_msk_configuration", "this")["lifecycle"][0]["precondition"]
    cases = [(["a", "b", "c"], 2, True), (["a", "b"], 2, False), (["a", "b", "c"], 3, False)]
    for subnets, isr, ok in cases:
        given = {"var.subnet_ids": subnets, "var.min_insync_replicas": isr}
        assert _terraform_eval(_resolve(msk, _hcl(rule["condition"]), given, {})) is ok


def test_partitions_default_to_12_and_spread_over_the_redis_shards():
    assert _task_env("STREAMREC_TOPIC_PARTITIONS") == "12"
    (check,) = _raw(EXAMPLE)["check"]
    condition = _hcl(check['"partitions_per_redis_shard"']["assert"][0]["condition"])
    assert _terraform_eval(_resolve(EXAMPLE, condition, {}, {})) is True  # 12 >= 4 x 2
    assert _terraform_eval(_resolve(EXAMPLE, condition, {"var.redis_shards": 4}, {})) is False


def test_redis_url_secret_is_a_url_the_clients_read():
    """rediss:// with the AUTH token as password (transit encryption is on): the URL the
    standalone and cluster clients and the API's readers all parse to TLS + AUTH."""
    redis_dir = TF / "modules" / "redis"
    version = _resource(redis_dir, "aws_secretsmanager_secret_version", "redis_url")
    expr = _hcl(version["secret_string"])
    given: dict[str, Any] = {
        "aws_secretsmanager_secret_version.auth_token.secret_string": "t0ken",
        "aws_elasticache_replication_group.this.configuration_endpoint_address": "cfg.cache",
        "aws_elasticache_replication_group.this.port": 6379,
    }
    tls = "aws_elasticache_replication_group.this.transit_encryption_enabled"
    for ref, value in given.items():
        expr = expr.replace(ref, json.dumps(value))
    url = _terraform_eval(expr.replace(tls, "true"))
    assert url == "rediss://:t0ken@cfg.cache:6379/0"
    assert _terraform_eval(expr.replace(tls, "false")).startswith("redis://:t0ken@")
    group = _resource(redis_dir, "aws_elasticache_replication_group", "this")
    assert group["transit_encryption_enabled"] is True
    # The tasks get it as STREAMREC_REDIS_URL, and every client reads TLS + AUTH from it: the
    # worker's and controller's redis-py clients (core.redis), the API's readers.
    secret = r'name = "STREAMREC_REDIS_URL", valueFrom = var.redis_url_secret_arn'
    assert re.search(secret, _text(ECS))
    opts = parse_url(url)
    assert opts["connection_class"] is SSLConnection and opts["password"] == "t0ken"
    reader = RedisReader(url)
    assert reader._ssl and reader._setup == (("AUTH", "t0ken"),)
    node = ClusterReader(url)._node(("node-1.cache", 6379))  # a shard found via CLUSTER SLOTS
    assert node._ssl and node._setup == (("AUTH", "t0ken"),) and node._host == "node-1.cache"
