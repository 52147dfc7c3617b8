"""What the nodes of the clustered local stack share: where they live and their address."""

from __future__ import annotations

from pathlib import Path

from core.config import Settings

# Every node binds and advertises loopback: a dev stack, and no IPv6/`localhost` ambiguity
# in the addresses the nodes gossip to each other and to clients.
HOST = "127.0.0.1"


def cluster_root(settings: Settings) -> Path:
    """Runtime files of the cluster topology (run/, logs/, one dir per node), apart from the
    single-node stack's, so both can run side by side."""
    return settings.data_path / "cluster"
