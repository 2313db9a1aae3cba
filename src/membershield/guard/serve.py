"""Listening for the guard command: the socket is bound before the service is built or its URL announced.

Left to uvicorn, a port in use or a host of another machine fails only after the URL has been announced
(exit code 3), and a port over 65535 ends up as some other port. Bound here, each is one
:class:`ConfigError` line naming the fix (exit code 2), and uvicorn is handed the listening socket, so
nothing can take the port in between."""

from __future__ import annotations

import errno
import socket
from typing import Any

from membershield.errors import ConfigError

BACKLOG = 2048  # uvicorn's default


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` (0: a free port), or a :class:`ConfigError` saying why not."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port: give one from 1 to 65535 (0 picks a free one)")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            f"--host {host} is not an address of this machine ({reason}): give one of its addresses,"
            " 127.0.0.1 or 0.0.0.0"
        ) from None
    # IPv4 first where a name has both, as uvicorn binds "localhost"
    family, kind, proto, _, address = next((a for a in found if a[0] == socket.AF_INET), found[0])
    sock = socket.socket(family, kind, proto)
    try:
        # as uvicorn does: a restart need not wait for the last connections' TIME_WAIT to pass
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(_explain(exc, host, port)) from None
    return sock


def _explain(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use: stop what listens there or give another --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"--host {host} is not an address of this machine: give one of its addresses, 127.0.0.1 or 0.0.0.0"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"no permission to listen on port {port} of {host} (ports under 1024 need privileges):"
            " give --port 1024 or above"
        )
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def url(host: str, sock: socket.socket) -> str:
    """The address a client would call, with the port actually bound (``--port 0`` picks one)."""
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(application: Any, sock: socket.socket) -> None:
    """Serve ``application`` on the bound ``sock`` until stopped (Ctrl-C, SIGTERM); closes the socket."""
    import uvicorn

    # "auto" picks uvloop and httptools (dependencies); requests are logged to the store, not to stdout
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise SystemExit(3)  # uvicorn.run's code for an application that failed to start; its log says why
