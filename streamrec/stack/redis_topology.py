"""The Redis Cluster as a whole, read from its nodes: formed or not, slots covered, who is
master of which slots and who replicates whom. ``up`` forms it once and waits until it is
whole; ``status`` reports it."""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field

from core.config import Settings
from streamrec.stack.cluster_base import HOST, cluster_root
from streamrec.stack.errors import ClusterError
from streamrec.stack.install import ensure_apt_package
from streamrec.stack.redis_cluster import REDIS_NODES, client, cluster_enabled, redis_ports

log = logging.getLogger(__name__)

SLOTS = 16384
# Flags of a node that is not (yet) a healthy member.
_BAD_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})


@dataclass(frozen=True)
class NodeView:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[str, ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags


def parse_nodes(text: str) -> list[NodeView]:
    views = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        addr = parts[1].split("@")[0]  # "127.0.0.1:7001@17001[,hostname]"
        port = int(addr.rsplit(":", 1)[1]) if ":" in addr and addr[-1].isdigit() else 0
        flags = frozenset(parts[2].split(","))
        master = None if parts[3] == "-" else parts[3]
        views.append(NodeView(parts[0], port, flags, master, tuple(parts[8:])))
    return views


@dataclass
class RedisHealth:
    """What ``status`` shows: the cluster state, each node's role, and what is wrong."""

    state: str = "unknown"
    slots_ok: int = 0
    nodes: list[NodeView] = field(default_factory=list)  # the healthy members
    roles: dict[int, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        masters = sum(n.is_master for n in self.nodes)
        return (
            f"redis cluster: cluster_state:{self.state}, {self.slots_ok}/{SLOTS} slots ok, "
            f"{masters} masters, {len(self.nodes) - masters} replicas up"
        )


def _info(port: int, timeout: float) -> dict[str, str] | None:
    """``CLUSTER INFO`` of one node (None if it does not answer)."""
    import redis

    conn = client(port, timeout)
    try:
        text = conn.execute_command("CLUSTER", "INFO")
        if isinstance(text, bytes):
            text = text.decode()
        if isinstance(text, dict):  # some redis-py versions parse the reply themselves
            return {k: str(v) for k, v in text.items()}
        return dict(line.split(":", 1) for line in str(text).splitlines() if ":" in line)
    except redis.RedisError:
        return None
    finally:
        conn.close()


def _nodes(port: int, timeout: float) -> list[NodeView]:
    import redis

    conn = client(port, timeout)
    try:
        reply = conn.execute_command("CLUSTER", "NODES")
        return parse_nodes(reply if isinstance(reply, str) else reply.decode())
    except redis.RedisError:
        return []
    finally:
        conn.close()


def _replica_link_up(port: int, timeout: float) -> bool:
    import redis

    conn = client(port, timeout)
    try:
        return conn.info("replication").get("master_link_status") == "up"
    except redis.RedisError:
        return False
    finally:
        conn.close()


def redis_health(settings: Settings, timeout: float = 2.0) -> RedisHealth:
    """The cluster as its nodes see it; ``problems`` is empty only when it is whole: every
    node answers and says cluster_state:ok, no node is failing in anyone's view, 3 masters
    own the slots and each has a replica in sync."""
    health = RedisHealth()
    infos: dict[int, dict[str, str]] = {}
    for index, port in enumerate(redis_ports(settings), 1):
        enabled = cluster_enabled(port, timeout)
        if enabled is False:
            health.problems.append(
                f"{HOST}:{port} (redis-{index}) is a Redis without cluster mode "
                "(cluster_enabled:0); stop it or set STREAMREC_CLUSTER_REDIS_BASE_PORT"
            )
        elif enabled and (info := _info(port, timeout)) is not None:
            infos[port] = info
        else:
            health.problems.append(f"redis-{index} ({HOST}:{port}) does not answer")
    if not infos:
        return health
    views = {port: _nodes(port, timeout) for port in infos}
    first = next(iter(infos))
    health.state = infos[first].get("cluster_state", "unknown")
    health.slots_ok = int(infos[first].get("cluster_slots_ok", 0))
    health.nodes = [n for n in views[first] if not n.flags & _BAD_FLAGS]
    by_id = {n.node_id: n for n in views[first]}
    for node in health.nodes:
        if node.is_master:
            health.roles[node.port] = f"master {' '.join(node.slots) or '(no slots)'}"
        else:
            master = by_id.get(node.master_id or "")
            health.roles[node.port] = f"replica of :{master.port if master else '?'}"
    health.problems += _whole_problems(infos, views, health.nodes, timeout)
    return health


def _whole_problems(
    infos: dict[int, dict[str, str]],
    views: dict[int, list[NodeView]],
    members: list[NodeView],
    timeout: float,
) -> list[str]:
    problems = []
    if any(int(i.get("cluster_known_nodes", 0)) <= 1 for i in infos.values()):
        problems.append("redis cluster: not formed (a node knows only itself)")
    for port, info in infos.items():
        if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) < SLOTS:
            problems.append(
                f"redis cluster: cluster_state:{info.get('cluster_state')} on :{port}, "
                f"{info.get('cluster_slots_ok', 0)}/{SLOTS} slots ok"
            )
            break
    failing = sorted({n.port for view in views.values() for n in view if n.flags & _BAD_FLAGS})
    if failing:
        problems.append(f"redis cluster: node(s) {', '.join(map(str, failing))} marked failing")
    owners = [n for n in members if n.is_master and n.slots]
    replicated = {n.master_id for n in members if not n.is_master}
    lonely = sorted(n.port for n in owners if n.node_id not in replicated)
    if len(owners) != REDIS_NODES // 2 or lonely:
        problems.append(
            f"redis cluster: {len(owners)} masters own slots, master(s) {lonely} without a "
            f"replica (want {REDIS_NODES // 2} masters with one replica each)"
        )
    for node in members:
        if not node.is_master and node.port in infos and not _replica_link_up(node.port, timeout):
            problems.append(f"redis cluster: replica :{node.port} not in sync with its master")
    return problems


def ensure_formed(settings: Settings, timeout: float) -> RedisHealth:
    """Create the cluster if every node is fresh, then wait until it is whole.

    A formed cluster (every node knows the others; ``nodes.conf`` kept them across restarts)
    is left alone. A mix of fresh and formed nodes (e.g. one node's data dir was deleted) is
    an error: re-forming would drop the other nodes' data, so that is the user's call.
    """
    ports = redis_ports(settings)
    # A node just (re)started may still be loading its AOF (it answers LOADING): give it a
    # while before calling it silent.
    deadline = time.monotonic() + min(timeout, 60.0)
    while True:
        infos = {port: _info(port, timeout=2.0) for port in ports}
        silent = [p for p, info in infos.items() if info is None]
        if not silent or time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    if silent:
        raise ClusterError(
            f"redis cluster: node(s) on port(s) {silent} do not answer CLUSTER INFO",
            service="redis cluster",
        )
    known = {p: int(i["cluster_known_nodes"]) for p, i in infos.items() if i}
    assigned = {p: int(i["cluster_slots_assigned"]) for p, i in infos.items() if i}
    if all(known[p] == 1 and assigned[p] == 0 for p in ports):
        _create(ports)
    elif any(known[p] < REDIS_NODES for p in ports):
        alone = ", ".join(str(p) for p in ports if known[p] < REDIS_NODES)
        raise ClusterError(
            f"redis cluster is only partly formed (port(s) {alone} do not know all "
            f"{REDIS_NODES} nodes); to start over: `streamrec stack down --topology cluster` "
            f"and delete {cluster_root(settings)}/redis-*",
            service="redis cluster",
        )
    return wait_whole(settings, timeout)


def _create(ports: list[int]) -> None:
    cli = ensure_apt_package(
        "redis cluster",
        "redis-cli",
        "redis-tools",
        elsewhere="brew install redis / dnf install redis",
        packaged_units=(),
    )
    cmd = [cli, "--cluster", "create", *(f"{HOST}:{p}" for p in ports)]
    cmd += ["--cluster-replicas", "1", "--cluster-yes"]
    log.info("redis cluster: forming %d masters + 1 replica each", REDIS_NODES // 2)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        tail = " | ".join([*result.stdout.strip().splitlines()[-3:], result.stderr.strip()])
        raise ClusterError(
            f"`redis-cli --cluster create` failed: {tail.strip(' |')}", service="redis cluster"
        )


def wait_whole(settings: Settings, timeout: float) -> RedisHealth:
    """Poll until every node says cluster_state:ok with all slots covered, none is failing
    and every replica is in sync; a ClusterError naming the first problem after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        health = redis_health(settings)
        if not health.problems:
            return health
        if time.monotonic() >= deadline:
            raise ClusterError(
                f"{health.problems[0]} (still, after {timeout:g} s)", service="redis cluster"
            )
        time.sleep(0.25)
