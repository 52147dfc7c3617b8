"""The clustered local stack (``stack up --topology cluster``): 3 KRaft brokers and a 6-node
Redis Cluster, beside the single-node stack (own ports, ``<data_path>/cluster/``).

The nodes are ordinary :class:`~streamrec.stack.base.Service` objects, so ``manager``
starts, stops and observes them like any service; this module adds what only a cluster has:
the groups ``--service`` selects, the check before starting, forming the Redis Cluster after,
a whole-cluster report for ``status``, and the settings clients need to use it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from core.config import Settings
from schemas.errors import ConfigError
from streamrec.stack.base import Service, ServiceState
from streamrec.stack.errors import ClusterError
from streamrec.stack.kafka_cluster import KAFKA_NODES, KafkaNode, bootstrap, kafka_health
from streamrec.stack.redis_cluster import REDIS_NODES, RedisNode, cluster_enabled, redis_ports
from streamrec.stack.redis_topology import ensure_formed, redis_health

GROUPS: tuple[str, ...] = ("kafka", "redis")


def nodes(settings: Settings, groups: Sequence[str] | None = None) -> list[Service]:
    """Every node of the chosen groups (both by default), in start order."""
    wanted = list(GROUPS) if groups is None else list(groups)
    unknown = sorted(set(wanted) - set(GROUPS))
    if unknown:
        raise ConfigError(
            f"unknown service(s) {', '.join(unknown)} for the cluster topology; "
            f"known: {', '.join(GROUPS)}"
        )
    chosen: list[Service] = []
    if "kafka" in wanted:
        chosen += [KafkaNode(settings, n) for n in range(1, KAFKA_NODES + 1)]
    if "redis" in wanted:
        chosen += [RedisNode(settings, n) for n in range(1, REDIS_NODES + 1)]
    return chosen


def preflight(chosen: Sequence[Service]) -> None:
    """Before anything starts: a plain Redis on a node's port is named as such (the generic
    "port taken" error would not say what is wrong)."""
    for node in chosen:
        if (
            isinstance(node, RedisNode)
            and node.pid() is None
            and cluster_enabled(node.port) is False
        ):
            raise ClusterError(
                f"127.0.0.1:{node.port} ({node.name}) is a Redis without cluster mode "
                "(cluster_enabled:0); stop it or set STREAMREC_CLUSTER_REDIS_BASE_PORT "
                "to free ports",
                service=node.name,
            )


def settle(settings: Settings, chosen: Sequence[Service], timeout: float) -> None:
    """After every node answers: form the Redis Cluster once and wait until it is whole, and
    wait until every partition is fully replicated again (a restarted broker catches up), so
    that the cluster ``up`` returns survives the loss of any one node."""
    if any(isinstance(node, RedisNode) for node in chosen):
        ensure_formed(settings, timeout)
    if any(isinstance(node, KafkaNode) for node in chosen):
        deadline = time.monotonic() + timeout
        while (health := kafka_health(settings)).problems or health.under_replicated:
            if time.monotonic() >= deadline:
                problem = health.problems[0] if health.problems else health.summary()
                raise ClusterError(f"{problem} (still, after {timeout:g} s)", service="kafka")
            time.sleep(0.5)


@dataclass
class ClusterReport:
    """``status`` of the cluster topology: every node, one summary line per engine, and what
    is wrong (empty when the cluster is whole)."""

    states: list[ServiceState]
    summaries: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def report(settings: Settings, groups: Sequence[str] | None = None) -> ClusterReport:
    """Every node of ``groups`` (both by default) and what the cluster says about itself."""
    chosen = nodes(settings, groups)
    states = [node.observe() for node in chosen]
    out = ClusterReport(states)
    if any(isinstance(node, KafkaNode) for node in chosen):
        kafka = kafka_health(settings)
        out.summaries.append(kafka.summary())
        out.problems += kafka.problems
        active = f"kafka-{kafka.controller}"
        out.states = [
            replace(st, role=st.role.replace("controller", "active controller"))
            if st.name == active and st.role
            else st
            for st in out.states
        ]
    if any(isinstance(node, RedisNode) for node in chosen):
        redis = redis_health(settings)
        out.summaries.append(redis.summary())
        out.problems += redis.problems
        out.states = [
            replace(st, role=redis.roles[st.port])
            if st.state == "running" and st.port in redis.roles
            else st
            for st in out.states
        ]
    return out


def client_settings(settings: Settings) -> Settings:
    """``settings`` pointed at the cluster: its three brokers, topics replicated 3 times with
    min.insync.replicas=2, and the Redis Cluster protocol with the first node as seed."""
    kafka = {
        "bootstrap": bootstrap(settings),
        "topic_replication_factor": KAFKA_NODES,
        "topic_min_insync_replicas": 2,
    }
    redis = {
        "url": f"redis://127.0.0.1:{redis_ports(settings)[0]}/0",
        "cluster": True,
        # A batch counts as applied only once a replica holds it (streams.redis_slots):
        # losing a master then loses nothing the worker committed offsets for.
        "min_replicas_ack": 1,
    }
    return settings.with_sections(stack={"topology": "cluster"}, kafka=kafka, redis=redis)


def client_env(settings: Settings) -> dict[str, str]:
    """The environment that points streamrec commands at the cluster (what `up` prints)."""
    clients = client_settings(settings)
    return {
        "STREAMREC_KAFKA_BOOTSTRAP": clients.kafka.bootstrap,
        "STREAMREC_TOPIC_REPLICATION_FACTOR": str(clients.kafka.topic_replication_factor),
        "STREAMREC_TOPIC_MIN_INSYNC_REPLICAS": str(clients.kafka.topic_min_insync_replicas),
        "STREAMREC_REDIS_URL": clients.redis.url,
        "STREAMREC_REDIS_CLUSTER": "true",
        "STREAMREC_REDIS_MIN_REPLICAS_ACK": str(clients.redis.min_replicas_ack),
    }
