"""The whole local stack as child processes: broker (or a local cluster of several,
SLUICE_BROKERS), schema registry and MQTT broker (if asked), edge (and its extra workers),
processor, integrations, sink.

Started in dependency order and stopped in reverse (edge first, broker last),
so in-flight requests drain before the broker goes away. Children run in their
own sessions and die with the parent if it is killed (PR_SET_PDEATHSIG).

Once started, the stack supervises every child, the broker included (each node
of a local cluster on its own; sluice.supervisor): a dead one is restarted with
exponential backoff, each restart is logged and counted in `run/status.json`, and
a crash loop stops the stack with a non-zero exit instead of restarting forever.

A stack owns its state folder: it locks it before touching anything in it
(sluice.state_lock) and, once ready, records where it listens in
`run/endpoints.json` (sluice.endpoints) for the CLI's other commands, and a Prometheus
config for those addresses in `run/prometheus.yml` (sluice.prometheus_config).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from catalog import keys
from config import Settings
from sluice import endpoints, prometheus_config
from sluice.local_cluster import LocalKafkaCluster
from sluice.local_kafka import LocalKafka
from sluice.local_mqtt import LocalMosquitto
from sluice.local_registry import LocalRegistry
from sluice.state_lock import StateLock
from sluice.supervisor import RestartPolicy, Supervisor, Watched
from sluice.topics_admin import ensure_topics


class StackError(RuntimeError):
    """A part of the stack did not start; the message says which and where its log is."""


def die_with_parent() -> None:
    """preexec_fn for children: Linux delivers them SIGTERM when the parent process dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def terminate(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; blocks until it has exited."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def admin_key(settings: Settings) -> str:
    """SLUICE_ADMIN_KEY, else the key saved on first start, else a new saved one."""
    if settings.admin_key:
        return settings.admin_key
    path = settings.state_dir / "admin-key"
    if path.exists():
        return path.read_text().strip()
    secret = keys.new_secret()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


@dataclasses.dataclass
class Child:
    name: str  # unique in the stack: the service, or e.g. "processor-2" for a second one
    service: str  # what it runs (`sluice <service>`)
    process: subprocess.Popen
    log: Path
    overrides: dict = dataclasses.field(default_factory=dict)  # its settings where they differ from the stack's


def _age(path: Path) -> float | None:
    """Seconds since `path` was last touched; None while it does not exist (not started beating yet)."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def describe_exit(code: int | None) -> str:
    if code is None:
        return "is running"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka: LocalKafkaCluster | None = None  # the local broker, or brokers (SLUICE_BROKERS)
        self.registry: LocalRegistry | None = None
        self.mqtt: LocalMosquitto | None = None  # `--with-mqtt`: a broker for MQTT integrations
        self.children: list[Child] = []
        self.supervisor = Supervisor(
            RestartPolicy(settings.restart_backoff_s, settings.restart_max_backoff_s,
                          settings.crash_loop_restarts, settings.crash_loop_window_s, settings.liveness_timeout_s),
            status_path=settings.state_dir / "run" / "status.json")
        self._lock = threading.RLock()  # one of check, restart, stop at a time
        self._state_lock = StateLock(settings.state_dir, "sluice up")
        self._stopping = threading.Event()
        self._background: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    @property
    def broker(self) -> LocalKafka | None:
        """The local broker (a cluster's first node); None with an external cluster."""
        return self.kafka.nodes[0] if self.kafka is not None else None

    def claim_state_dir(self) -> None:
        """Lock the state folder for this stack until stop(), before anything in it is touched;
        raises StateLocked at once, naming the running owner, if another process holds it. Idempotent.

        Endpoints a stack killed without a clean stop left behind are removed: they were its.
        """
        if not self._state_lock.held:
            self._state_lock.acquire()
            endpoints.remove(self.settings.state_dir)

    def start(self, timeout: float = 180) -> None:
        """Lock the state folder, start every part and wait until each is ready, then record the
        endpoints; raises StateLocked (touching nothing) or StackError (after stopping what started)."""
        self.claim_state_dir()
        try:
            self._start(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, deadline: float) -> None:
        settings = self.settings
        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            self.kafka = LocalKafkaCluster(settings.state_dir, settings.brokers, settings.local_kafka_port)
            bootstrap = self.kafka.start()
        registry_url = settings.schema_registry_url
        if settings.starts_local_registry:
            self.registry = LocalRegistry(settings.state_dir, port=settings.registry_port)
            registry_url = self.registry.start()
        key_file = None if settings.admin_key else settings.state_dir / "admin-key"
        self.settings = settings = dataclasses.replace(
            settings, kafka_bootstrap=bootstrap, admin_key=admin_key(settings), schema_registry_url=registry_url)
        ensure_topics(bootstrap, settings)  # replicas as the cluster has brokers, up to 3; min ISR 2 of 3
        if self.kafka is not None:
            self._watch_brokers(self.kafka)
        if self.registry is not None:
            self._watch_registry(self.registry)
        if settings.with_mqtt:
            self.mqtt = LocalMosquitto(settings.state_dir, settings.mqtt_port)
            self.mqtt.start()
            self.supervisor.watch(Watched("mqtt", alive=lambda: self.mqtt.running, restart=self.mqtt.start,
                                          pid=lambda: self.mqtt.pid,
                                          describe_exit=lambda: describe_exit(self.mqtt.returncode)))
        for service in ("edge", "processor", "integrations", *(() if settings.embedded_warehouse else ("sink",))):
            self._spawn(service)
            self._watch(service)
            if service == "edge":
                # More edge processes on the same port; stopped before the primary they forward to.
                for number in range(2, settings.edge_workers + 1):
                    self._spawn("edge-worker", f"edge-{number}")
                    self._watch(f"edge-{number}")
        self._wait_ready(deadline)
        prometheus_config.write_for_stack(settings)
        endpoints.record(settings, key_file)  # last: clients take this file as "the stack is up"

    def _watch(self, service: str) -> None:
        self.supervisor.watch(Watched(
            service, alive=lambda: self._child(service).process.poll() is None,
            restart=lambda: self._respawn(service),
            describe_exit=lambda: describe_exit(self._child(service).process.poll()),
            pid=lambda: self._child(service).process.pid,
            silent_for=lambda: _age(self._heartbeat(service)),
            kill=lambda: self._child(service).process.kill()))

    def _heartbeat(self, name: str) -> Path:
        return self.settings.state_dir / "run" / f"{name}.heartbeat"

    def _watch_brokers(self, kafka: LocalKafkaCluster) -> None:
        """Watch the broker, or each node of a cluster on its own (`broker-1`, `broker-2`, ...)."""
        if len(kafka.nodes) == 1:
            self._watch_broker(kafka.nodes[0], "broker", wait_ready=True)
            return
        for node in kafka.nodes:
            # Launched, not waited for: a node serves only with a majority of the voters running,
            # and with two of three down, waiting for the first restarted one would never end.
            self._watch_broker(node, f"broker-{node.node_id}", wait_ready=False)

    def _watch_broker(self, broker: LocalKafka, name: str, wait_ready: bool) -> None:
        def restart() -> None:
            broker.stop()  # reaps the dead JVM (a killed child stays a zombie until waited for)
            if wait_ready:
                broker.start()
            else:
                broker.launch()

        self.supervisor.watch(Watched(
            name, alive=lambda: broker.running, restart=restart, pid=lambda: broker.pid,
            describe_exit=lambda: describe_exit(broker.returncode)))

    def _watch_registry(self, registry: LocalRegistry) -> None:
        def restart() -> None:
            registry.stop()  # reaps the dead JVM
            registry.start()

        self.supervisor.watch(Watched(
            "registry", alive=lambda: registry.running, restart=restart, pid=lambda: registry.pid,
            describe_exit=lambda: describe_exit(registry.returncode)))

    def _child(self, service: str) -> Child:
        return next(c for c in self.children if c.name == service)

    def _respawn(self, name: str) -> None:
        with self._lock:
            child = self._child(name)
            self.children.remove(child)
            self._spawn(child.service, name, child.overrides)

    def add(self, service: str, name: str, **overrides: object) -> None:
        """Run one more instance of `service` under its own `name` (its log, and its static
        group member id), with the stack's settings but for `overrides` (e.g. an edge's
        `http_port`), supervised like the others; does not wait for it to be ready."""
        with self._lock:
            self._spawn(service, name, overrides)
            self._watch(name)

    def _wait_ready(self, deadline: float) -> None:
        ready_file = self.settings.state_dir / "run" / "processor.ready"
        while time.monotonic() < deadline:
            self.check_alive()
            if self._edge_ready() and ready_file.exists():
                return
            time.sleep(0.25)
        raise StackError("the stack did not become ready in time; see the logs in "
                         f"{self.settings.state_dir / 'logs'}")

    def restart(self, service: str, sig: int = signal.SIGTERM, timeout: float = 120) -> None:
        """Stop one service with `sig` (SIGKILL simulates a crash), start it again, wait until ready."""
        with self._lock:
            child = self._child(service)
            child.process.send_signal(sig)
            child.process.wait(timeout)
            self._respawn(service)
        self._wait_ready(time.monotonic() + timeout)

    def restart_brokers(self, node_ids: list[int], sig: int = signal.SIGTERM, down_s: float = 0.0) -> None:
        """Stop these nodes of the local cluster with `sig` (SIGTERM: a controlled shutdown, as in a
        rolling restart; SIGKILL: a crash), keep them down `down_s` seconds, then launch them again
        without waiting for them to serve; blocks. The supervisor pauses meanwhile, so it does not
        restart them itself."""
        with self._lock:
            nodes = [self.kafka.node(node_id) for node_id in node_ids]
            if sig != signal.SIGTERM:
                for node in nodes:
                    os.killpg(node.pid, sig)  # each JVM leads its own process group
            for node in nodes:
                node.stop()  # SIGTERM and wait; reaps one already killed
            time.sleep(down_s)
            for node in nodes:
                node.launch()

    def _spawn(self, service: str, name: str | None = None, overrides: dict | None = None) -> None:
        name = name or service
        logs = self.settings.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if service == "processor":
            (self.settings.state_dir / "run" / "processor.ready").unlink(missing_ok=True)
        log_path = logs / f"{name}.log"
        env = {**os.environ, **dataclasses.replace(self.settings, **(overrides or {})).to_env()}
        # A stable name per child: restarted, its consumers rejoin their groups as the same static
        # members. Unique per child: two members with one instance id would fence each other.
        env["SLUICE_INSTANCE_ID"] = f"{self.settings.instance_id}-{name}" if self.settings.instance_id else name
        # Its watchdog touches this while it is healthy; the supervisor kills it if it goes stale.
        heartbeat = self._heartbeat(name)
        heartbeat.parent.mkdir(parents=True, exist_ok=True)
        heartbeat.unlink(missing_ok=True)  # a new process is judged by its own beats only
        env["SLUICE_HEARTBEAT_PATH"] = str(heartbeat)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "sluice.cli", service],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        self.children.append(Child(name, service, process, log_path, overrides or {}))

    def check_alive(self) -> None:
        """Raise StackError with the log's tail if any child has exited."""
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                tail = child.log.read_text(errors="replace")[-3000:]
                raise StackError(f"{child.name} exited with code {code}; its log ({child.log}) ends:\n{tail}")

    def _edge_ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def supervise(self, stop: threading.Event, interval: float = 0.3) -> int:
        """Restart dead children until `stop` is set (0) or one is in a crash loop (1); blocks.

        A pass may block for a restart: a broker takes a few seconds to answer again.
        """
        while not stop.wait(interval):
            with self._lock:
                if self._stopping.is_set():
                    return 0
                failed = self.supervisor.check()
            if failed:
                for name in failed:
                    child = next((c for c in self.children if c.name == name), None)
                    where = f"; see {child.log}" if child else ""
                    print(f"sluice: {name} is crash-looping; giving up{where}", file=sys.stderr, flush=True)
                return 1
        return 0

    def supervise_in_background(self) -> None:
        """Supervise from a thread until stop() (for embedding the stack, e.g. in tests)."""
        self._background = threading.Thread(target=self.supervise, args=(self._stopping,), name="supervisor",
                                            daemon=True)
        self._background.start()

    def wait(self) -> int:
        """Supervise until SIGINT/SIGTERM (0) or a crash loop (1); blocks."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        return self.supervise(stop)

    def stop(self, timeout: float = 20) -> None:
        """Stop supervising, then children in reverse order, then the registry and the broker, then give
        the state folder up; idempotent."""
        self._stopping.set()
        with self._lock:
            if self._state_lock.held:  # clients stop finding a stack that is going away
                endpoints.remove(self.settings.state_dir)
            for child in reversed(self.children):
                terminate(child.process, timeout)
            self.children.clear()
            if self.registry is not None:
                self.registry.stop()
                self.registry = None
            if self.mqtt is not None:
                self.mqtt.stop()
                self.mqtt = None
            if self.kafka is not None:
                self.kafka.stop()
                self.kafka = None
            self._state_lock.release()
