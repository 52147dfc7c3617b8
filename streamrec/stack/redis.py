"""Redis for online features: the distro's ``redis-server`` with our own config and dir."""

from __future__ import annotations

from pathlib import Path

from streamrec.stack.base import Service, host_port_from_url, port_open, render_template
from streamrec.stack.install import ensure_apt_package


class RedisService(Service):
    name = "redis"
    marker = "redis-server"

    @property
    def host(self) -> str:
        return host_port_from_url(self.settings.redis.url, default_port=6379, setting="redis_url")[
            0
        ]

    @property
    def port(self) -> int:
        return host_port_from_url(self.settings.redis.url, default_port=6379, setting="redis_url")[
            1
        ]

    @property
    def config_path(self) -> Path:
        return self.run_dir / "redis.conf"

    def ensure_installed(self) -> None:
        self._binary()

    def _binary(self) -> str:
        return ensure_apt_package(
            "redis",
            "redis-server",
            "redis-server",
            elsewhere="brew install redis / dnf install redis",
            packaged_units=("redis-server",),
        )

    def prepare(self) -> None:
        self._require_local(self.host, "redis_url")
        data_dir = self.settings.data_path / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        render_template(
            self.settings.home / "infra" / "redis" / "redis.conf.template",
            self.config_path,
            port=self.port,
            dir=data_dir,
        )

    def command(self) -> list[str]:
        return [self._binary(), str(self.config_path)]

    def probe(self, timeout: float = 2.0) -> bool:
        if not port_open(self.port):
            return False
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One attempt: the default retries with backoff turn a "not Redis" answer into ~25 s.
            retry=Retry(NoBackoff(), 0),
        )
        try:
            return bool(client.ping())
        except (redis.AuthenticationError, redis.ResponseError):
            return True  # a password-protected or busy-loading Redis is still Redis
        except redis.RedisError:
            return False
        finally:
            client.close()
