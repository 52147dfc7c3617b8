"""Integration tests of `streamrec stack` on the real processes.

The "shared" tests bring up (and leave up) the default stack on 9092/9093/6379 that other
tests and engineers use; everything that stops things runs on an isolated stack with a
temporary data dir and free ports, so the shared stack is never touched by `down`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from core.config import Settings
from streamrec import stack
from streamrec.stack.base import port_open
from streamrec.stack.errors import ExitedError, NotReadyError, PortInUseError
from tests.support.ports import free_ports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
UP = {"started", "running", "external"}


def _shared_settings() -> Settings:
    return Settings(home=REPO, data_dir=REPO / "data").with_sections(
        kafka={"bootstrap": "localhost:9092", "controller_port": 9093, "jmx_exporter_port": 9404},
        redis={"url": "redis://localhost:6379/0"},
    )


@pytest.fixture(scope="module")
def shared() -> Settings:
    settings = _shared_settings()
    states = stack.up(settings)
    assert {st.state for st in states} <= UP
    return settings


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[Settings]:
    kafka, controller, jmx, redis_port, prom = free_ports(5)
    settings = Settings(home=REPO, data_dir=tmp_path / "data").with_sections(
        kafka={
            "bootstrap": f"localhost:{kafka}",
            "controller_port": controller,
            "jmx_exporter_port": jmx,
        },
        redis={"url": f"redis://localhost:{redis_port}/0"},
        observability={"prometheus_port": prom},
    )
    yield settings
    stack.down(settings)  # whatever a failed test left behind, on these ports only


@pytest.fixture
def bystander_redis(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A redis-server streamrec did not start, on a port of its own."""
    (port,) = free_ports(1)
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_ping(port)
    yield port, proc
    proc.terminate()
    proc.wait(10)


def _wait_for_ping(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_timeout=1).ping():
                return
        except redis.ConnectionError:
            time.sleep(0.1)
    raise AssertionError(f"redis on {port} never answered PING")


# --- the shared default stack ---------------------------------------------------------------


def test_up_is_idempotent(shared: Settings) -> None:
    first = {st.name: st for st in stack.up(shared)}
    second = {st.name: st for st in stack.up(shared)}
    assert set(first) == set(second) == {"kafka", "redis"}
    for name, st in second.items():
        assert st.state in {"running", "external"}, st  # nothing new started
        assert st.pid == first[name].pid


def test_kafka_produce_consume_round_trip(shared: Settings) -> None:
    bootstrap = shared.kafka.bootstrap
    topic = f"streamrec-test.stack.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    try:
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, key=b"u1", value=b"hello")
        assert producer.flush(30) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"test-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe([topic])
        try:
            deadline, msg = time.monotonic() + 30, None
            while msg is None and time.monotonic() < deadline:
                msg = consumer.poll(1.0)
                if msg is not None and msg.error():
                    raise AssertionError(msg.error())
        finally:
            consumer.close()
        assert msg is not None, "no message consumed within 30 s"
        assert (msg.key(), msg.value()) == (b"u1", b"hello")
    finally:
        admin.delete_topics([topic])[topic].result(30)


def test_redis_answers_ping(shared: Settings) -> None:
    client = redis.Redis.from_url(shared.redis.url, socket_timeout=2)
    assert client.ping() is True


def test_status_reports_services_with_ports(shared: Settings) -> None:
    states = {st.name: st for st in stack.status(shared)}
    assert states["kafka"].state in {"running", "external"}
    assert states["kafka"].port == 9092
    assert states["redis"].state in {"running", "external"}
    assert states["redis"].port == 6379


def test_cli_up_and_status(shared: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env["COLUMNS"] = "200"
    cli = [sys.executable, "-m", "streamrec", "stack"]
    up = subprocess.run([*cli, "up"], env=env, cwd=REPO, capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    assert "already running" in up.stdout or "reused" in up.stdout
    status = subprocess.run([*cli, "status"], env=env, cwd=REPO, capture_output=True, text=True)
    assert status.returncode == 0, status.stdout + status.stderr
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
    assert "9092" in lines["kafka"]
    assert "6379" in lines["redis"]


# --- isolated stacks (temporary data dir, free ports) ---------------------------------------


def test_down_stops_only_what_up_started(
    isolated: Settings, bystander_redis: tuple[int, subprocess.Popen[bytes]]
) -> None:
    bystander_port, bystander = bystander_redis
    # A too-short wait fails with the log to read, and leaves no half-started broker behind.
    with pytest.raises(NotReadyError) as err:
        stack.up(isolated, ["kafka"], timeout=0.5)
    assert "kafka.log" in str(err.value)
    assert not stack.services(isolated, ["kafka"])[0].is_running()

    states = {st.name: st for st in stack.up(isolated)}
    assert {states["kafka"].state, states["redis"].state} == {"started"}
    kafka_port, redis_port = states["kafka"].port, states["redis"].port
    assert port_open(kafka_port)
    assert port_open(redis_port)
    # The broker we started carries the Prometheus JMX exporter agent.
    url = f"http://127.0.0.1:{isolated.kafka.jmx_exporter_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read().decode()
    assert "kafka_server_brokertopicmetrics_messagesin_total" in body
    assert "kafka_network_requestmetrics" in body
    # What the dashboards and alerts read, and only that (the exporter walks no other beans).
    assert "kafka_server_replicamanager_underreplicatedpartitions" in body
    assert "kafka_controller_kafkacontroller_offlinepartitionscount" in body
    assert "kafka_log_" not in body

    stopped = {st.name: st for st in stack.down(isolated)}
    assert stopped["kafka"].pid == states["kafka"].pid
    assert stopped["redis"].pid == states["redis"].pid
    assert not port_open(kafka_port)
    assert not port_open(redis_port)
    assert not list((isolated.data_path / "run").glob("*.pid"))
    assert bystander.poll() is None
    assert redis.Redis(port=bystander_port, socket_timeout=2).ping()


def test_up_reuses_a_foreign_server_and_down_leaves_it(
    tmp_path: Path, bystander_redis: tuple[int, subprocess.Popen[bytes]]
) -> None:
    port, bystander = bystander_redis
    settings = Settings(home=REPO, data_dir=tmp_path / "data").with_sections(
        redis={"url": f"redis://localhost:{port}"}
    )
    # A stale pid file naming a live process that is not redis (this test) is ignored.
    pid_file = settings.data_path / "run" / "redis.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{os.getpid()}\n")

    (state,) = stack.up(settings, ["redis"])
    assert state.state == "external"
    (state,) = stack.down(settings, ["redis"])
    assert state.state == "external"
    assert bystander.poll() is None
    assert not pid_file.exists()


def test_up_fails_clearly_when_the_port_is_not_the_service(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = Settings(home=REPO, data_dir=tmp_path).with_sections(
            redis={"url": f"redis://localhost:{port}"}
        )
        with pytest.raises(PortInUseError) as err:
            stack.up(settings, ["redis"])
    assert err.value.service == "redis"
    assert str(port) in str(err.value)


def test_a_service_that_dies_on_start_fails_with_its_log(isolated: Settings) -> None:
    broken = isolated.with_sections(kafka={"heap": "-Xmx1q"})  # the JVM refuses to start
    with pytest.raises(ExitedError) as err:
        stack.up(broken, ["kafka"])
    assert err.value.service == "kafka"
    assert err.value.returncode not in (None, 0)
    assert "kafka.out" in str(err.value)
    assert not (broken.data_path / "run" / "kafka.pid").exists()
