"""The sockets an edge worker serves on.

Several edge workers (`SLUICE_EDGE_WORKERS`) share the HTTP port: each binds it
with SO_REUSEPORT and the kernel spreads new connections over them. A socket is
bound here but not listened on: the server listens once its app has started
(catalog caught up), so a worker that is still starting is never handed a
connection. The primary worker also serves a Unix socket in the state folder,
which only the other workers use (producers.edge.forward): local, and no port to
choose or collide on.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from config import Settings


def primary_socket_path(settings: Settings) -> Path:
    """Where the primary edge worker takes the requests its siblings forward."""
    return settings.state_dir / "run" / "edge-primary.sock"


def http_socket(settings: Settings) -> socket.socket:
    """The HTTP port, bound (shared with the other workers when there are several), not yet listening."""
    # Only with several workers: with one, a second edge on the port must fail loudly, as before.
    return _tcp_socket(settings.http_host, settings.http_port, shared=settings.edge_workers > 1)


def clickhouse_socket(settings: Settings) -> socket.socket:
    """The ClickHouse-compatible interface's port (SLUICE_CLICKHOUSE_PORT), bound, not yet listening:
    the primary's alone, which holds the warehouse."""
    return _tcp_socket(settings.http_host, settings.clickhouse_port, shared=False)


def _tcp_socket(host: str, port: int, shared: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def primary_socket(settings: Settings) -> socket.socket:
    """The primary's Unix socket for its siblings' forwarded requests, bound, not yet listening."""
    path = primary_socket_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a previous primary's, left by a crash
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)  # the forwarded requests carry API keys
    return sock
