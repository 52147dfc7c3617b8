"""The three Kafka nodes of the clustered local stack (``stack up --topology cluster``).

Each node is the single-node :class:`KafkaService` (same pinned jars, JVM flags, logging and
JMX exporter) with its own ports, heap, data dir and config under ``<data_path>/cluster/``;
all three are broker and controller, forming a 3-voter KRaft quorum.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.config import Settings
from streamrec.stack.base import ServiceState, port_open, render_template
from streamrec.stack.cluster_base import HOST, cluster_root
from streamrec.stack.errors import InstallError
from streamrec.stack.kafka import KafkaService

log = logging.getLogger(__name__)

KAFKA_NODES = 3


def broker_ports(settings: Settings) -> list[int]:
    return [settings.cluster.kafka_base_port + 2 * i for i in range(KAFKA_NODES)]


def bootstrap(settings: Settings) -> str:
    return ",".join(f"{HOST}:{port}" for port in broker_ports(settings))


class KafkaNode(KafkaService):
    """Node ``node_id`` (1-3) of the cluster."""

    def __init__(self, settings: Settings, node_id: int) -> None:
        super().__init__(settings)
        self.node_id = node_id
        self.name = f"kafka-{node_id}"
        # The rendered config is the last argv of the JVM: unique to this node and this data dir.
        self.marker = str(self.config_path)

    # --- ports -------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return broker_ports(self.settings)[self.node_id - 1]

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def jmx_exporter_port(self) -> int:
        # After the six broker/controller ports: one block of 9 (19092-19100 by default).
        return self.settings.cluster.kafka_base_port + 2 * KAFKA_NODES - 1 + self.node_id

    @property
    def heap(self) -> str:
        return self.settings.cluster.kafka_heap

    # --- paths -------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return cluster_root(self.settings) / "run"

    @property
    def log_path(self) -> Path:
        # log4j2 names its file kafka.log in -Dkafka.logs.dir: one directory per node.
        return cluster_root(self.settings) / "logs" / self.name / "kafka.log"

    @property
    def kafka_dir(self) -> Path:
        return cluster_root(self.settings) / self.name

    @property
    def config_path(self) -> Path:
        return self.run_dir / f"{self.name}.properties"

    @property
    def cluster_id_path(self) -> Path:
        return cluster_root(self.settings) / "kafka-cluster.id"  # one id for all three nodes

    # --- config and storage ------------------------------------------------------------
    def prepare(self) -> None:
        voters = ",".join(
            f"{n}@{HOST}:{port + 1}" for n, port in enumerate(broker_ports(self.settings), 1)
        )
        render_template(
            self.infra_dir / "cluster-server.properties.template",
            self.config_path,
            node_id=self.node_id,
            voters=voters,
            host=HOST,
            broker_port=self.port,
            controller_port=self.controller_port,
            log_dirs=self.log_dirs,
        )
        if not (self.log_dirs / "meta.properties").exists():
            self._format_storage()

    def _format_storage(self) -> None:
        # The voters are static (controller.quorum.voters), so no --standalone: every node is
        # formatted alike with the shared cluster id. The ports are in the metadata log, so
        # changing cluster_kafka_base_port later needs fresh data dirs.
        cmd = [
            "java",
            "-cp",
            self._classpath(),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            self.cluster_id(),
            "--config",
            str(self.config_path),
        ]
        log.info("%s: formatting KRaft storage in %s", self.name, self.log_dirs)
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise InstallError(self.name, cmd[:1] + cmd[3:], result.stdout + result.stderr)

    # --- readiness and roles -------------------------------------------------------------
    def probe(self, timeout: float = 2.0) -> bool:
        """This node answers metadata and is itself registered (it needs a quorum for that)."""
        if not port_open(self.port):
            return False
        return self.node_id in _brokers(self.endpoint(), timeout)

    def quorum_leader(self) -> tuple[int, int] | None:
        """(epoch, id) of the quorum leader (the active controller) as this node last saw it.

        Read from the quorum-state file KRaft keeps in the metadata log dir: instant, where
        the JMX exporter takes ~2 s a scrape and the Kafka protocol, as librdkafka speaks it,
        names a random broker as "controller" under KRaft."""
        path = self.log_dirs / "__cluster_metadata-0" / "quorum-state"
        try:
            state = json.loads(path.read_text())
            return int(state["leaderEpoch"]), int(state["leaderId"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def observe(self) -> ServiceState:
        st = super().observe()
        if st.state != "running":
            return st
        return replace(st, role=f"broker {self.node_id} + controller")


def active_controller(nodes: list[KafkaNode]) -> int | None:
    """The leader of the newest epoch any running node knows (None if unknown)."""
    seen = [lead for node in nodes if node.is_running() and (lead := node.quorum_leader())]
    return max(seen)[1] if seen and max(seen)[1] >= 0 else None


def _brokers(endpoint: str, timeout: float) -> set[int]:
    """Broker ids in the metadata ``endpoint`` returns (empty when it does not answer)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # Any: librdkafka's client takes a Logger here, which the stubs' config values omit.
    conf: dict[str, Any] = {"bootstrap.servers": endpoint, "logger": log, "log_level": 3}
    admin = AdminClient(conf)
    try:
        return set(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return set()


@dataclass
class KafkaHealth:
    """What the cluster's metadata says, for ``status``: brokers and replication."""

    brokers: set[int] = field(default_factory=set)
    controller: int | None = None
    under_replicated: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        active = "unknown" if self.controller is None else f"kafka-{self.controller}"
        return (
            f"kafka cluster: {len(self.brokers)}/{KAFKA_NODES} brokers, active controller "
            f"{active}, {self.under_replicated} under-replicated partitions"
        )


def kafka_health(settings: Settings, timeout: float = 5.0) -> KafkaHealth:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    nodes = [KafkaNode(settings, n) for n in range(1, KAFKA_NODES + 1)]
    health = KafkaHealth(controller=active_controller(nodes))
    if not any(port_open(port) for port in broker_ports(settings)):
        health.problems.append(f"kafka cluster: no broker answers on {bootstrap(settings)}")
        return health
    # Any: librdkafka's client takes a Logger here, which the stubs' config values omit.
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap(settings), "logger": log, "log_level": 3}
    admin = AdminClient(conf)
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as err:
        health.problems.append(f"kafka cluster: no metadata from {bootstrap(settings)}: {err}")
        return health
    health.brokers = set(meta.brokers)
    health.under_replicated = sum(
        len(p.isrs) < len(p.replicas) for t in meta.topics.values() for p in t.partitions.values()
    )
    missing = sorted(set(range(1, KAFKA_NODES + 1)) - health.brokers)
    if missing:
        health.problems.append(
            f"kafka cluster: broker(s) {', '.join(map(str, missing))} not registered "
            f"({len(health.brokers)}/{KAFKA_NODES} up)"
        )
    return health
