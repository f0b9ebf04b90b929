"""Run a real Mosquitto broker locally (Debian's `mosquitto` package), for `sluice up --with-mqtt`
and the tests of MQTT integrations.

Bound to 127.0.0.1, anonymous clients allowed (or, given users, only they, by a password file
made with `mosquitto_passwd`), its sessions and queued messages persisted under
the state folder (`mqtt/`), so a persistent session keeps what arrives while its client is away,
across a broker restart too. Two limits are raised from Mosquitto's defaults, as any broker
feeding Sluice should raise them: `max_queued_messages` (default 1000: a session away longer
than 1000 messages would lose the rest) and `max_inflight_messages` (default 20: each message
waits for its Kafka ack before the broker may send more).
"""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MAX_QUEUED = 10_000_000
MAX_INFLIGHT = 1000


class LocalMqttError(RuntimeError):
    """Mosquitto is not installed, or did not start."""


class LocalMosquitto:
    def __init__(self, state_dir: Path, port: int, users: dict[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        """`users`: name → password; only they may connect (none given: anyone). `tls`: (certificate
        chain, private key) files in PEM: the listener speaks MQTT over TLS only."""
        self.port = port
        self._dir = state_dir / "mqtt"
        self._users = users or {}
        self._tls = tls
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self._tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process else None

    def start(self, timeout: float = 15) -> str:
        """Start the broker and wait until it accepts connections; returns its URL."""
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if binary is None:
            raise LocalMqttError("mosquitto is not installed (Debian/Ubuntu: apt-get install mosquitto)")
        self._dir.mkdir(parents=True, exist_ok=True)
        config = self._dir / "mosquitto.conf"
        config.write_text("\n".join([
            f"listener {self.port} 127.0.0.1",
            *([f"certfile {self._tls[0]}", f"keyfile {self._tls[1]}"] if self._tls else []),
            *self._access(),
            "persistence true",
            f"persistence_location {self._dir}/",
            "autosave_interval 1",
            f"max_queued_messages {MAX_QUEUED}",
            f"max_inflight_messages {MAX_INFLIGHT}",
            f"log_dest file {self._dir / 'mosquitto.log'}",
            f"user {getpass.getuser()}",  # as root it would switch to a `mosquitto` user that cannot write here
            "",
        ]))
        self._process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise LocalMqttError(f"mosquitto exited with code {self._process.returncode}; see "
                                     f"{self._dir / 'mosquitto.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self.url
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise LocalMqttError(f"mosquitto did not listen on port {self.port} within {timeout:g} s")

    def _access(self) -> list[str]:
        """The config lines of who may connect; writes the password file when there are users."""
        if not self._users:
            return ["allow_anonymous true"]
        tool = shutil.which("mosquitto_passwd")
        if tool is None:
            raise LocalMqttError("mosquitto_passwd is not installed (it comes with Debian's mosquitto package)")
        passwords = self._dir / "passwords"
        passwords.unlink(missing_ok=True)
        passwords.touch(mode=0o600)
        for user, password in self._users.items():
            # -b: the password from the command line (a local test broker's, not a secret worth more).
            subprocess.run([tool, "-b", str(passwords), user, password], check=True, capture_output=True, timeout=30)
        return ["allow_anonymous false", f"password_file {passwords}"]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM saves its sessions first); blocks until it exited. Idempotent."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(sig)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
