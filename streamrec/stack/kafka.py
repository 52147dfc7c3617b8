"""Apache Kafka 4.1.1 as one KRaft process (broker + controller), run straight from jars.

The jars come from Maven Central via ``infra/kafka/pom.xml`` into the git-ignored cache,
so no Kafka tarball, no ZooKeeper and no Docker are needed, only Java 17 and Maven.
"""

from __future__ import annotations

import base64
import logging
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from streamrec.stack.base import Service, host_port_from_url, port_open, render_template
from streamrec.stack.errors import InstallError, NotInstalledError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
# Present only after a complete copy (the copy goes to a temp dir that is renamed).
_KEY_JARS = ("kafka_2.13-", "log4j-slf4j-impl-", "jmx_prometheus_javaagent-")


class KafkaService(Service):
    name = "kafka"
    marker = "kafka.Kafka"

    @property
    def host(self) -> str:
        return host_port_from_url(
            self.settings.kafka.bootstrap, default_port=9092, setting="kafka_bootstrap"
        )[0]

    @property
    def port(self) -> int:
        return host_port_from_url(
            self.settings.kafka.bootstrap, default_port=9092, setting="kafka_bootstrap"
        )[1]

    @property
    def controller_port(self) -> int:
        return self.settings.kafka.controller_port

    @property
    def jmx_exporter_port(self) -> int:
        return self.settings.kafka.jmx_exporter_port

    @property
    def heap(self) -> str:
        return self.settings.kafka.heap

    def other_ports(self) -> dict[str, int]:
        return {"controller": self.controller_port, "JMX exporter": self.jmx_exporter_port}

    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    # --- paths -----------------------------------------------------------------------
    @property
    def infra_dir(self) -> Path:
        return self.settings.home / "infra" / "kafka"

    @property
    def libs_dir(self) -> Path:
        return self.settings.cache_path / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def kafka_dir(self) -> Path:
        return self.settings.data_path / "kafka"

    @property
    def log_dirs(self) -> Path:
        return self.kafka_dir / "kraft-combined-logs"

    @property
    def config_path(self) -> Path:
        return self.run_dir / "kafka.properties"

    @property
    def cluster_id_path(self) -> Path:
        return self.kafka_dir / "cluster.id"

    @property
    def console_path(self) -> Path:
        # log4j2 writes kafka.log itself (rolling); the JVM's own stdout/stderr (crashes,
        # agent errors, a broken log4j config) must not be interleaved into it.
        return self.log_path.with_suffix(".out")

    # --- install ---------------------------------------------------------------------
    def ensure_installed(self) -> None:
        if shutil.which("java") is None:
            raise NotInstalledError(
                "kafka",
                "java",
                "install Java 17+, e.g. `apt-get install -y openjdk-17-jre-headless`",
            )
        if self._jars_present():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise NotInstalledError(
                "kafka", "mvn", "install Maven, e.g. `apt-get install -y maven`"
            )
        staging = self.libs_dir.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(self.infra_dir / "pom.xml"),
            "dependency:copy-dependencies",
            f"-Dstreamrec.libs={staging}",
        ]
        log.info(
            "kafka: fetching Kafka %s jars with Maven into %s ...", KAFKA_VERSION, self.libs_dir
        )
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise InstallError("kafka", cmd, result.stdout + result.stderr)
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        staging.replace(self.libs_dir)

    def _jars_present(self) -> bool:
        names = [p.name for p in self.libs_dir.glob("*.jar")]
        return all(any(n.startswith(key) for n in names) for key in _KEY_JARS)

    def _agent_jar(self) -> Path:
        return next(self.libs_dir.glob("jmx_prometheus_javaagent-*.jar"))

    def _classpath(self) -> str:
        # The JVM expands "dir/*" to every jar in it. The exporter agent's jar is among them,
        # which is harmless: -javaagent appends it to the system classpath anyway (it is
        # shaded, so it cannot clash with the broker's own libraries).
        return f"{self.libs_dir}/*"

    # --- config and storage ----------------------------------------------------------
    def prepare(self) -> None:
        self._require_local(self.host, "kafka_bootstrap")
        render_template(
            self.infra_dir / "server.properties.template",
            self.config_path,
            broker_host=self.host,
            broker_port=self.port,
            controller_host=self.host,
            controller_port=self.settings.kafka.controller_port,
            log_dirs=self.log_dirs,
        )
        if not (self.log_dirs / "meta.properties").exists():
            self._format_storage()

    def cluster_id(self) -> str:
        """The KRaft cluster id, generated once and kept next to the data it formatted."""
        path = self.cluster_id_path
        if path.exists():
            return path.read_text().strip()
        cid = ""
        while not cid or cid.startswith("-"):  # Kafka's own Uuid never starts with '-'
            cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(cid + "\n")
        return cid

    def _format_storage(self) -> None:
        # --standalone: this node is the single voter of a dynamic (KIP-853) quorum. The
        # controller endpoint is written into the metadata log, so changing the controller
        # port later needs a fresh data dir.
        cmd = [
            "java",
            "-cp",
            self._classpath(),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--cluster-id",
            self.cluster_id(),
            "--config",
            str(self.config_path),
        ]
        log.info("kafka: formatting KRaft storage in %s", self.log_dirs)
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise InstallError("kafka", cmd[:1] + cmd[3:], result.stdout + result.stderr)

    def command(self) -> list[str]:
        infra, logs = self.infra_dir, self.log_path.parent
        exporter = self.jmx_exporter_port
        return [
            "java",
            *shlex.split(self.heap),
            # The GC flags of Kafka's own kafka-run-class.sh.
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={logs}",
            f"-Dlog4j2.configurationFile={infra / 'log4j2.yaml'}",
            f"-javaagent:{self._agent_jar()}=127.0.0.1:{exporter}:{infra / 'jmx-exporter.yaml'}",
            "-cp",
            self._classpath(),
            "kafka.Kafka",
            str(self.config_path),
        ]

    # --- readiness -------------------------------------------------------------------
    def probe(self, timeout: float = 2.0) -> bool:
        """A metadata request answered by at least one broker (so it is Kafka, and it is up)."""
        if not port_open(self.port):
            return False  # skip the client: it would log connection errors for a closed port
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        # Any: librdkafka's client takes a Logger here, which the stubs' config values omit.
        conf: dict[str, Any] = {"bootstrap.servers": self.endpoint(), "logger": log, "log_level": 3}
        admin = AdminClient(conf)
        try:
            return bool(admin.list_topics(timeout=timeout).brokers)
        except KafkaException:
            return False

    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.jmx_exporter_port}/metrics"
