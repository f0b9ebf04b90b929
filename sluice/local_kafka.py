"""Run a real single-node Apache Kafka broker locally, without Docker.

Sluice's dev loop and tests need a genuine Kafka (not a mock) but must not
depend on a Docker engine. This module takes the official broker jars
(sluice.kafka_jars resolves them from Maven Central once, cached under
``~/.cache/sluice`` and shared by every clone and CI run), then starts
``kafka.Kafka`` as a child JVM in KRaft mode (combined broker + controller,
node id 1) bound to 127.0.0.1. A node can also be one of several in a quorum
(sluice.kafka_quorum): sluice.local_cluster runs those.

Typical use::

    with LocalKafka(Path(".sluice"), port=9092) as kafka:
        produce_to(kafka.bootstrap)

or from a shell: ``python -m sluice.local_kafka --state-dir .sluice --port 9092``.

Requirements on the machine: a JDK/JRE 17+ (``java``) and Maven (``mvn``)
on PATH, and network access to Maven Central the first time.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sluice.child_jvm import ChildJvm, port_is_free, raise_keyboard_interrupt, size, tail
from sluice.download_cache import default_cache_dir
from sluice.kafka_jars import KAFKA_RESOURCES, LocalKafkaError, ensure_jars, require_java
from sluice.kafka_quorum import Quorum, cluster_configs, new_cluster_id, replication_configs
from sluice.state_lock import StateLock, StateLocked

log = logging.getLogger(__name__)

LOG4J_CONFIG = KAFKA_RESOURCES / "log4j2.properties"


def _can_connect(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class LocalKafka(ChildJvm):
    """A KRaft Kafka broker (and controller) running as a child JVM: a single node, or node
    ``node_id`` of a ``quorum``.

    State lives in ``state_dir/<home_name>`` (``kafka`` by default):
    ``server.properties``, ``data/`` (the log dir, kept across restarts),
    ``logs/server.log`` (broker log) and ``stdout.log`` (JVM output). Listens
    on 127.0.0.1 only.

    ``controller_port`` defaults to ``port + 1``. ``heap`` is the JVM -Xmx;
    ``jvm_options`` are more JVM flags.
    """

    label = "Kafka"

    def __init__(
        self,
        state_dir: Path,
        port: int = 9092,
        controller_port: int | None = None,
        heap: str = "512m",
        *,
        node_id: int = 1,
        quorum: Quorum | None = None,
        home_name: str = "kafka",
        jvm_options: tuple[str, ...] = (),
    ) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.port = port
        self.controller_port = controller_port if controller_port is not None else port + 1
        self.heap = heap
        self.node_id = node_id
        self.quorum = quorum or Quorum(f"{node_id}@127.0.0.1:{self.controller_port}", 1)
        self.jvm_options = jvm_options
        super().__init__(self.state_dir / home_name, self.state_dir / home_name / "stdout.log")
        self.data_dir = self.home / "data"
        self.logs_dir = self.home / "logs"
        self.config_path = self.home / "server.properties"
        self.server_log_path = self.logs_dir / "server.log"
        # Log sizes when the JVM was spawned: error tails skip older runs.
        self._log_offsets = (0, 0)

    # -- public API ---------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap.servers`` string clients should use."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> str:
        """Start the broker and return its bootstrap address once it serves requests.

        Blocks: first for the one-off jar download (not counted in ``timeout``),
        for formatting a fresh log dir (~1 s, one short JVM run), then up to
        ``timeout`` seconds for the broker to answer a metadata request
        (typically 2-3 s). Raises LocalKafkaError if java/mvn are missing, a
        port is taken, the JVM exits early, or it is not ready in time (the
        error carries the tail of the broker log). No-op if already running.

        Orphan protection: an atexit hook stops the broker on a normal
        interpreter exit; on Linux, when called from the main thread, the
        kernel also SIGTERMs it if this process dies hard (PR_SET_PDEATHSIG).
        """
        if self.running:
            return self.bootstrap
        self.launch()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def launch(self) -> None:
        """Start the JVM without waiting for it to serve: the steps of ``start()`` before its wait.

        A node of a quorum cannot serve before a majority of the voters runs, so a cluster
        launches every node, then waits for each. Raises LocalKafkaError as ``start()`` does.
        """
        self.spawn(self.prepare())

    def prepare(self) -> tuple[str, Path]:
        """Check the ports, fetch the jars, write the config and format a fresh log dir (a short JVM
        run); returns (java, libs) for ``spawn``. Blocks; raises LocalKafkaError."""
        java = require_java()
        self._check_ports_free()
        libs = ensure_jars(default_cache_dir())
        self._write_config()
        self._format_if_needed(java, libs)
        return java, libs

    def spawn(self, prepared: tuple[str, Path]) -> None:
        """Start the JVM with what ``prepare()`` returned; does not wait for it to serve."""
        java, libs = prepared
        try:
            self._spawn(java, libs)
        except BaseException:
            self.stop()
            raise

    @property
    def cluster_id(self) -> str | None:
        """The cluster id formatted into this node's log dir; None before it is formatted."""
        try:
            meta = (self.data_dir / "meta.properties").read_text()
        except OSError:
            return None
        return next((line.split("=", 1)[1].strip() for line in meta.splitlines()
                     if line.startswith("cluster.id=")), None)

    # -- start-up steps -----------------------------------------------------

    def _check_ports_free(self) -> None:
        for name, port in (("port", self.port), ("controller_port", self.controller_port)):
            if not port_is_free(port):
                raise LocalKafkaError(
                    f"{name} 127.0.0.1:{port} is already in use; pick another port "
                    f"(or stop the other process: `ss -ltnp 'sport = :{port}'`)"
                )

    def server_properties(self) -> dict[str, str]:
        """The broker configuration written to ``server.properties``."""
        return {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.quorum.voters,
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # Topics are created explicitly by the pipeline; typos must fail.
            "auto.create.topics.enable": "false",
            "num.partitions": "4",
            "log.retention.hours": "168",
            # The internal topics: a copy on each node, up to three (a single node: replication factor 1).
            **replication_configs(self.quorum.size),
            # Fewer internal partitions: the first consumer group joins faster.
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.num.partitions": "8",
            "group.initial.rebalance.delay.ms": "0",
            # Sized for a laptop: the cleaner's dedupe buffer is heap allocated
            # up front (128 MiB by default).
            "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            **(cluster_configs(self.quorum.size) if self.quorum.size > 1 else {}),
        }

    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        lines = ["# Written by sluice.local_kafka on every start; edits are overwritten."]
        lines += [f"{k}={v}" for k, v in self.server_properties().items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _jvm_args(self, java: str, libs: Path) -> list[str]:
        return [
            java,
            f"-Xmx{self.heap}",
            *self.jvm_options,
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            # Die loudly instead of limping on after an OOM.
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            f"{libs}/*",
        ]

    def _format_if_needed(self, java: str, libs: Path) -> None:
        """Format the log dir once; an existing meta.properties keeps the data."""
        if (self.data_dir / "meta.properties").exists():
            return
        cmd = self._jvm_args(java, libs) + [
            "kafka.tools.StorageTool", "format",
            "-t", self.quorum.cluster_id or new_cluster_id(), "-c", str(self.config_path),
        ]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise LocalKafkaError(
                f"formatting {self.data_dir} failed (exit {proc.returncode}):\n{proc.stdout}"
            )

    def _spawn(self, java: str, libs: Path) -> None:
        cmd = self._jvm_args(java, libs) + ["kafka.Kafka", str(self.config_path)]
        self._log_offsets = (size(self.stdout_path), size(self.server_log_path))
        self._spawn_process(cmd)
        log.info("Kafka pid %s starting on %s", self._proc.pid, self.bootstrap)

    def wait_ready(self, timeout: float) -> None:
        """Poll until the broker answers a metadata request or ``timeout`` passes; blocks.

        Raises LocalKafkaError (with the log's tail) if the JVM exits or the time runs out.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._raise_if_exited()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LocalKafkaError(
                    f"Kafka did not become ready on {self.bootstrap} within {timeout}s; "
                    f"log tail:\n{self._logtail()}"
                )
            # A plain TCP probe first keeps librdkafka from logging refused connects.
            if _can_connect("127.0.0.1", self.port) and self._answers_metadata(min(remaining, 5)):
                return
            time.sleep(0.2)

    def _answers_metadata(self, timeout: float) -> bool:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({
            "bootstrap.servers": self.bootstrap,
            # Keep librdkafka's retry chatter out of the console.
            "logger": logging.getLogger(f"{__name__}.admin"),
        })
        try:
            md = admin.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return bool(md.brokers)

    def _raise_if_exited(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            code = self._proc.returncode
            self.stop()
            raise LocalKafkaError(
                f"Kafka exited with code {code} during start-up; log tail:\n{self._logtail()}"
            )

    def _logtail(self) -> str:
        out_start, log_start = self._log_offsets
        return (
            f"--- {self.stdout_path} ---\n{tail(self.stdout_path, 15, out_start)}"
            f"--- {self.server_log_path} ---\n{tail(self.server_log_path, 40, log_start)}"
        )

# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m sluice.local_kafka``: run a broker until SIGINT/SIGTERM.

    Prints the bootstrap address alone on stdout (for scripts); progress goes
    to stderr. Returns 1 if the broker fails to start or dies on its own.
    """
    parser = argparse.ArgumentParser(
        prog="python -m sluice.local_kafka",
        description="Run a local single-node Kafka broker (no Docker) until Ctrl-C.",
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".sluice"),
                        help="where broker data and logs live (default: ./.sluice)")
    parser.add_argument("--port", type=int, default=9092, help="client port (default: 9092)")
    parser.add_argument("--controller-port", type=int, default=None,
                        help="KRaft controller port (default: port + 1)")
    parser.add_argument("--heap", default="512m", help="JVM max heap (default: 512m)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # Held (by `owned`) until this process ends: no `sluice up` may start a second broker on these files.
    try:
        owned = StateLock(args.state_dir, "python -m sluice.local_kafka").acquire()
    except StateLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    # SIGTERM behaves like Ctrl-C, so both also abort a start() in progress.
    # SIGINT is set explicitly: shells start background jobs with it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, raise_keyboard_interrupt)
    kafka = LocalKafka(args.state_dir, args.port, args.controller_port, args.heap)
    try:
        print(kafka.start(), flush=True)
        print(f"Kafka ready (pid {kafka.pid}); logs in {kafka.logs_dir}. Ctrl-C to stop.",
              file=sys.stderr, flush=True)
        while kafka.running:
            time.sleep(0.5)
        print(f"Kafka exited unexpectedly; see {kafka.server_log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the clean shutdown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if kafka.pid is not None:
            kafka.stop()
            print("Kafka stopped.", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
