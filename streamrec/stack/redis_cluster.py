"""The six Redis nodes of the clustered local stack: ``redis-server`` in cluster mode, each
with its own port, cluster bus (port + 10000), data dir and ``nodes.conf``.

What the cluster as a whole looks like (formed? slots covered? who is master?) is read from
the nodes themselves in :mod:`streamrec.stack.redis_topology`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config import Settings
from streamrec.stack.base import ServiceState, port_open, render_template
from streamrec.stack.cluster_base import HOST, cluster_root
from streamrec.stack.redis import RedisService

REDIS_NODES = 6
BUS_OFFSET = 10_000  # Redis's fixed offset of the cluster bus port


def redis_ports(settings: Settings) -> list[int]:
    return [settings.cluster.redis_base_port + i for i in range(REDIS_NODES)]


def client(port: int, timeout: float = 2.0) -> Any:
    """A plain (non-cluster) client of one node, one attempt, decoded replies."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        host=HOST,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def cluster_enabled(port: int, timeout: float = 2.0) -> bool | None:
    """Whether the Redis on ``port`` runs in cluster mode; None if no Redis answers there."""
    import redis

    conn = client(port, timeout)
    try:
        return bool(conn.info("cluster").get("cluster_enabled"))
    except (redis.AuthenticationError, redis.ResponseError):
        return None  # password-protected or loading: not one of ours to judge
    except redis.RedisError:
        return None
    finally:
        conn.close()


class RedisNode(RedisService):
    """Node ``index`` (1-6) of the cluster; which of them are masters is the cluster's call."""

    def __init__(self, settings: Settings, index: int) -> None:
        super().__init__(settings)
        self.index = index
        self.name = f"redis-{index}"

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return redis_ports(self.settings)[self.index - 1]

    def other_ports(self) -> dict[str, int]:
        return {"cluster bus": self.port + BUS_OFFSET}

    @property
    def run_dir(self) -> Path:
        return cluster_root(self.settings) / "run"

    @property
    def log_path(self) -> Path:
        return cluster_root(self.settings) / "logs" / f"{self.name}.log"

    @property
    def data_dir(self) -> Path:
        return cluster_root(self.settings) / self.name

    @property
    def config_path(self) -> Path:
        return self.run_dir / f"{self.name}.conf"

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        render_template(
            self.settings.home / "infra" / "redis" / "redis-cluster.conf.template",
            self.config_path,
            port=self.port,
            dir=self.data_dir,
            node_timeout_ms=self.settings.cluster.redis_node_timeout_ms,
        )

    def probe(self, timeout: float = 2.0) -> bool:
        """A Redis in cluster mode answers (a plain Redis on the port is not a node of ours)."""
        return port_open(self.port) and bool(cluster_enabled(self.port, timeout))

    def observe(self) -> ServiceState:
        st = super().observe()
        if st.state == "conflict" and cluster_enabled(self.port) is False:
            detail = "a Redis without cluster mode holds the port"
            return ServiceState(st.name, st.state, st.port, st.pid, st.log_path, detail)
        return st
