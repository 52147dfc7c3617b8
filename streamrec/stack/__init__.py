"""The native local stack: Kafka (KRaft), Redis and optionally MinIO and Prometheus as plain
processes, plus streamrec's own stream worker and API when asked for by name.

``up`` starts what is missing (installing it on first use), ``down`` stops what ``up``
started, ``status`` reports. Runtime files live under ``<data_path>``: ``run/`` (pid files,
rendered configs), ``logs/``, and one data directory per service. ``topology="cluster"``
swaps the one broker and the one Redis for 3 KRaft brokers and a 6-node Redis Cluster
(:mod:`.cluster`), whose files live under ``<data_path>/cluster/``.
"""

from streamrec.stack.base import Service, ServiceState
from streamrec.stack.errors import StackError
from streamrec.stack.manager import (
    DEFAULT_SERVICES,
    INFRA_SERVICES,
    SERVICES,
    cluster_report,
    down,
    services,
    status,
    up,
)

__all__ = [
    "DEFAULT_SERVICES",
    "INFRA_SERVICES",
    "SERVICES",
    "Service",
    "ServiceState",
    "StackError",
    "cluster_report",
    "down",
    "services",
    "status",
    "up",
]
