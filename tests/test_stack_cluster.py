"""Integration tests of the clustered local stack (`streamrec stack up --topology cluster`):
3 KRaft brokers and a 6-node Redis Cluster as real processes.

The shared cluster (the session fixture ``cluster_stack``, default ports 19092-19097 and
7001-7006) is left whole by every test here: the fault tests bring back what they kill, and
the `down` test ends with an `up`. The error cases run on throwaway Redis Clusters (free
ports, a temporary data dir), which start in a second, and stop them again.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource
from redis.crc import key_slot

from core.config import Settings
from core.kafka import delete_topics, end_offsets, ensure_topics
from schemas.errors import ConfigError
from streamrec import stack
from streamrec.stack import cluster
from streamrec.stack.base import port_open
from streamrec.stack.cluster import report
from streamrec.stack.redis_topology import SLOTS, redis_health

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
KAFKA_NODES, REDIS_NODES = 3, 6
UP = {"started", "running", "external"}


# --- helpers ---------------------------------------------------------------------------------


def _eventually(check: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(0.5)


def _node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)


def _cluster_info(port: int) -> dict[str, str]:
    text = _node(port).execute_command("CLUSTER", "INFO")
    if isinstance(text, dict):
        return {k: str(v) for k, v in text.items()}
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _cli(
    settings: Settings, *args: str, data_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env |= {
        "COLUMNS": "200",
        "STREAMREC_DATA_DIR": str(data_dir or settings.data_path),
        "STREAMREC_CLUSTER_REDIS_BASE_PORT": str(settings.cluster.redis_base_port),
        "STREAMREC_CLUSTER_KAFKA_BASE_PORT": str(settings.cluster.kafka_base_port),
    }
    return subprocess.run(
        [sys.executable, "-m", "streamrec", "stack", *args, "--topology", "cluster"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _prefixed(cluster: Settings) -> Settings:
    return cluster.with_sections(kafka={"topic_prefix": f"t{uuid.uuid4().hex[:10]}"})


def _partitions(settings: Settings, topic: str) -> list[tuple[int, list[int], list[int]]]:
    meta = AdminClient({"bootstrap.servers": settings.kafka.bootstrap}).list_topics(timeout=10)
    return [(p.leader, p.replicas, p.isrs) for p in meta.topics[topic].partitions.values()]


def _brokers(settings: Settings) -> set[int]:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    return set(admin.list_topics(timeout=10).brokers)


def _states(settings: Settings) -> dict[str, stack.ServiceState]:
    return {st.name: st for st in stack.status(settings, topology="cluster")}


@pytest.fixture
def topic(cluster_stack: Settings) -> Iterator[tuple[Settings, str]]:
    """The event topics of a fresh prefix on the cluster, and the full name of ``watch``."""
    settings = _prefixed(cluster_stack)
    ensure_topics(settings.kafka)
    yield settings, settings.topic("watch")
    delete_topics(settings.kafka)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_redis_base() -> int:
    """A base port whose 6 node ports and 6 cluster bus ports (+10000) are all free, all
    below the ephemeral range (32768+), where an outgoing connection could take one."""
    start = 12_000 + os.getpid() % 600 * 6
    for base in [*range(start, 16_000, 6), *range(12_000, start, 6)]:
        if all(_bindable(base + i) and _bindable(base + i + 10_000) for i in range(REDIS_NODES)):
            return base
    raise AssertionError("no free port range for a throwaway Redis Cluster")


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[Settings]:
    """Settings for a Redis Cluster of our own (free ports, temporary data dir)."""
    settings = Settings(home=REPO, data_dir=tmp_path / "data").with_sections(
        cluster={"redis_base_port": _free_redis_base()}
    )
    yield settings
    stack.down(settings, ["redis"], topology="cluster")


# --- the shared cluster ----------------------------------------------------------------------


def test_up_starts_three_brokers_and_a_whole_redis_cluster(
    cluster_stack: Settings, topic: tuple[Settings, str]
) -> None:
    settings, watch = topic
    assert _brokers(settings) == {1, 2, 3}
    parts = _partitions(settings, watch)
    assert len(parts) == settings.kafka.topic_partitions
    for _leader, replicas, isrs in parts:
        assert sorted(replicas) == [1, 2, 3]
        assert sorted(isrs) == [1, 2, 3]
    # min.insync.replicas is set on the topic itself (not merely the broker's default of 2).
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, watch)
    entry = admin.describe_configs([resource])[resource].result(30)["min.insync.replicas"]
    assert entry.value == "2"
    assert entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    base = cluster_stack.cluster.redis_base_port
    ports = [base + i for i in range(REDIS_NODES)]
    for port in ports:
        info = _cluster_info(port)
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_slots_assigned"]) == int(info["cluster_slots_ok"]) == SLOTS
        assert int(info["cluster_known_nodes"]) == REDIS_NODES
    lines = [line.split() for line in _node(base).execute_command("CLUSTER", "NODES").splitlines()]
    masters = [f for f in lines if "master" in f[2].split(",")]
    replicas = [f for f in lines if "slave" in f[2].split(",")]
    assert (len(masters), len(replicas)) == (3, 3)
    assert {f[3] for f in replicas} == {f[0] for f in masters}  # one replica per master
    # Every node runs with the persistence and failover settings of the template.
    config = _node(base).config_get("*")
    assert (config["appendonly"], config["appendfsync"]) == ("yes", "everysec")
    assert config["cluster-node-timeout"] == str(cluster_stack.cluster.redis_node_timeout_ms)


def test_status_lists_every_node_with_its_role(cluster_stack: Settings) -> None:
    states = _states(cluster_stack)
    assert set(states) == {f"kafka-{n}" for n in (1, 2, 3)} | {f"redis-{n}" for n in range(1, 7)}
    assert all(st.state == "running" for st in states.values()), states
    roles = [st.role for st in states.values()]
    assert sum(r.startswith("master ") for r in roles) == 3
    assert sum(r.startswith("replica of :") for r in roles) == 3
    assert sum("active controller" in r for r in roles) == 1
    assert sum(r.startswith("broker ") for r in roles) == 3

    out = _cli(cluster_stack, "status")
    assert out.returncode == 0, out.stdout + out.stderr
    for name, st in states.items():
        assert any(
            line.split()[:1] == [name] and str(st.port) in line for line in out.stdout.splitlines()
        )
    assert "cluster_state:ok, 16384/16384 slots ok, 3 masters, 3 replicas" in out.stdout
    assert "3/3 brokers" in out.stdout


def test_second_up_starts_nothing(cluster_stack: Settings) -> None:
    before = _states(cluster_stack)
    again = {st.name: st for st in stack.up(cluster_stack, topology="cluster")}
    assert {st.state for st in again.values()} == {"running"}
    assert {n: st.pid for n, st in again.items()} == {n: st.pid for n, st in before.items()}


def test_a_killed_broker_leaves_acks_all_producing_and_catches_up(
    cluster_stack: Settings, topic: tuple[Settings, str]
) -> None:
    settings, watch = topic
    states = _states(cluster_stack)
    victim = next(n for n, st in states.items() if "active controller" in st.role)
    victim_id = int(victim.split("-")[1])
    os.kill(states[victim].pid, signal.SIGKILL)
    try:
        # Fenced by the surviving quorum, the dead broker leaves every ISR: 2 = min ISR.
        _eventually(
            lambda: all(
                victim_id not in isrs and len(isrs) == 2
                for _, _, isrs in _partitions(settings, watch)
            ),
            "the dead broker left the ISRs",
        )
        producer = Producer(
            {
                "bootstrap.servers": settings.kafka.bootstrap,
                "acks": "all",
                "enable.idempotence": True,
            }
        )
        failed: list[object] = []
        for i in range(2000):
            producer.produce(
                watch,
                key=f"u{i}".encode(),
                value=b"x",
                on_delivery=lambda err, _msg: failed.append(err) if err else None,
            )
        assert producer.flush(60) == 0
        assert failed == []
        assert sum(hi - lo for lo, hi in end_offsets(settings.kafka, [watch]).values()) == 2000
        result = report(cluster_stack, ["kafka"])
        assert any(f"broker(s) {victim_id} not registered" in p for p in result.problems)
        assert {st.name: st.state for st in result.states}[victim] == "stopped"
    finally:
        restarted = {st.name: st for st in stack.up(cluster_stack, ["kafka"], topology="cluster")}
    assert restarted[victim].state == "started"
    _eventually(
        lambda: all(sorted(isrs) == [1, 2, 3] for _, _, isrs in _partitions(settings, watch)),
        "the restarted broker back in every ISR",
    )
    assert sum(hi - lo for lo, hi in end_offsets(settings.kafka, [watch]).values()) == 2000


def test_a_killed_redis_master_fails_over_and_rejoins_as_replica(cluster_stack: Settings) -> None:
    health = redis_health(cluster_stack)
    assert not health.problems, health.problems
    master = next(n for n in health.nodes if n.is_master and n.slots)
    replica = next(n for n in health.nodes if n.master_id == master.node_id)
    first, last = (int(x) for x in master.slots[0].split("-"))
    key = next(
        k for i in range(100_000) if first <= key_slot((k := f"failover:{i}").encode()) <= last
    )
    client = _node(master.port)
    client.set(key, "kept", ex=600)
    assert client.execute_command("WAIT", 1, 5000) >= 1  # on the replica before the crash
    states = {st.port: st for st in _states(cluster_stack).values()}
    os.kill(states[master.port].pid, signal.SIGKILL)
    try:
        timeout = 10 * cluster_stack.cluster.redis_node_timeout_ms / 1000

        def promoted() -> bool:
            info = _node(replica.port).info("replication")
            return info["role"] == "master" and _cluster_info(replica.port)["cluster_state"] == "ok"

        _eventually(promoted, f"replica :{replica.port} promoted, cluster_state:ok", timeout)
        assert _node(replica.port).get(key) == "kept"
    finally:
        stack.up(cluster_stack, ["redis"], topology="cluster")  # waits until whole again
    info = _node(master.port).info("replication")
    assert info["role"] == "slave"
    assert int(info["master_port"]) == replica.port
    assert _node(replica.port).get(key) == "kept"


def test_down_stops_every_node_and_up_restores_the_data(
    cluster_stack: Settings, topic: tuple[Settings, str]
) -> None:
    settings, watch = topic
    health = redis_health(cluster_stack)
    master = next(n for n in health.nodes if n.is_master and n.slots)
    first, last = (int(x) for x in master.slots[0].split("-"))
    key = next(
        k for i in range(100_000) if first <= key_slot((k := f"persist:{i}").encode()) <= last
    )
    _node(master.port).set(key, "on disk", ex=600)
    run_dir = cluster_stack.data_path / "cluster" / "run"

    stopped = stack.down(cluster_stack, topology="cluster")
    assert len(stopped) == KAFKA_NODES + REDIS_NODES
    assert all(st.state == "stopped" and st.pid for st in stopped), stopped
    for node in cluster.nodes(cluster_stack):  # broker, controller, exporter, cluster bus
        assert not any(port_open(port) for port in (node.port, *node.other_ports().values()))
    assert not list(run_dir.glob("*.pid"))

    started = stack.up(cluster_stack, topology="cluster")
    assert {st.state for st in started} == {"started"}
    assert not report(cluster_stack).problems
    assert _node(master.port).get(key) == "on disk"  # the AOF kept it across the restart
    assert (
        watch
        in AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
        .list_topics(timeout=10)
        .topics
    )


# --- bad configurations: one clear line, never a traceback -----------------------------------


def test_a_plain_redis_on_a_node_port_is_one_clear_error(
    throwaway: Settings, tmp_path: Path
) -> None:
    port = throwaway.cluster.redis_base_port + 2
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    plain = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        _eventually(lambda: port_open(port), "the plain redis-server listening", 10)
        out = _cli(throwaway, "up", "--service", "redis")
        assert out.returncode == 3
        assert "Traceback" not in out.stderr
        (line,) = out.stderr.strip().splitlines()
        assert f"127.0.0.1:{port} (redis-3) is a Redis without cluster mode" in line
        assert not list((throwaway.data_path / "cluster" / "run").glob("*.pid"))  # none started

        status = _cli(throwaway, "status", "--service", "redis")
        assert status.returncode == 1
        assert "Traceback" not in status.stdout + status.stderr
        assert f"error: 127.0.0.1:{port} (redis-3) is a Redis without cluster mode" in status.stdout
    finally:
        plain.terminate()
        plain.wait(10)


def test_uncovered_slots_are_named_by_status_and_up_makes_the_cluster_whole(
    throwaway: Settings,
) -> None:
    stack.up(throwaway, ["redis"], topology="cluster")
    health = redis_health(throwaway)
    master = next(n for n in health.nodes if n.is_master and n.slots)
    replica = next(n for n in health.nodes if n.master_id == master.node_id)
    pids = {st.port: st.pid for st in stack.status(throwaway, ["redis"], topology="cluster")}
    for port in (master.port, replica.port):  # a whole shard: nobody can take over its slots
        os.kill(pids[port], signal.SIGKILL)

    def failed() -> subprocess.CompletedProcess[str] | None:
        out = _cli(throwaway, "status", "--service", "redis")
        return out if "cluster_state:fail" in out.stdout else None

    out = _eventually(failed, "status reporting cluster_state:fail", 60)
    assert out.returncode == 1
    assert "Traceback" not in out.stdout + out.stderr
    errors = [line for line in out.stdout.splitlines() if line.startswith("error: ")]
    lost = sum(int(r.split("-")[-1]) - int(r.split("-")[0]) + 1 for r in master.slots)
    assert any(
        "cluster_state:fail" in e and f"{SLOTS - lost}/{SLOTS} slots ok" in e for e in errors
    ), errors
    assert any(f"(127.0.0.1:{master.port}) does not answer" in e for e in errors), errors

    again = _cli(throwaway, "up", "--service", "redis")
    assert again.returncode == 0, again.stderr
    assert not redis_health(throwaway).problems


def test_a_partly_formed_cluster_is_one_clear_error_and_starts_nothing(throwaway: Settings) -> None:
    stack.up(throwaway, ["redis"], topology="cluster")
    stack.down(throwaway, ["redis"], topology="cluster")
    shutil.rmtree(throwaway.data_path / "cluster" / "redis-2")  # one node forgot the cluster

    out = _cli(throwaway, "up", "--service", "redis")
    assert out.returncode == 3
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "redis cluster is only partly formed" in line
    assert str(throwaway.cluster.redis_base_port + 1) in line
    assert not list((throwaway.data_path / "cluster" / "run").glob("*.pid"))
    base = throwaway.cluster.redis_base_port
    assert not any(port_open(base + i) for i in range(REDIS_NODES))


def test_cluster_topology_refuses_all_and_unknown_services(throwaway: Settings) -> None:
    out = _cli(throwaway, "up", "--all")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "streamrec stack: error: --all starts minio and prometheus of the single topology only"
    ]
    with pytest.raises(ConfigError, match="unknown service"):
        stack.up(throwaway, ["redis", "nosuch"], topology="cluster")
    # The other services are the single stack's, chosen by name only: `down` leaves them be.
    assert [svc.name for svc in cluster.nodes(throwaway)] == [
        *(f"kafka-{n}" for n in range(1, 4)),
        *(f"redis-{n}" for n in range(1, 7)),
    ]
    assert {st.name for st in stack.status(throwaway, ["redis", "api"], topology="cluster")} == {
        *(f"redis-{n}" for n in range(1, 7)),
        "api",
    }
