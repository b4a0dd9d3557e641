"""Serving the demo application with uvicorn on a socket bound here.

The socket is bound before uvicorn starts, so ``--port 0`` (a free port chosen by the system)
can be printed as a real address, and a test can start the server in a thread and know where
it listens before the first request.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any, Optional

import uvicorn

__all__ = ["ServerThread", "bind", "serve", "url_of"]


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one).

    Raises:
        OSError: the address is taken or cannot be bound (the message names it).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise OSError(f"Cannot listen on {host}:{port} ({exc.strerror or exc}): "
                      f"pick another --port, or 0 for a free one.") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port/`` of a bound socket (a wildcard host shown as localhost)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "localhost"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def _server(app: Any, sock: socket.socket, log_level: str) -> uvicorn.Server:
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False)
    return uvicorn.Server(config)


def serve(app: Any, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve ``app`` on ``sock`` until Ctrl+C."""
    _server(app, sock, log_level).run(sockets=[sock])


class ServerThread:
    """The application served from a background thread (for tests and notebooks).

    Args:
        app: the ASGI application.
        host: address to bind.
        port: port to bind (0: a free one).
        sock: an already bound socket to serve on instead (``host`` and ``port`` are then unused).

    Attributes:
        url: where it listens, ``http://host:port/``.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, sock: Optional[socket.socket] = None) -> None:
        self.sock = sock if sock is not None else bind(host, port)
        self.url = url_of(self.sock)
        self.server = _server(app, self.sock, "warning")
        self.thread: Optional[threading.Thread] = None

    def start(self, timeout: float = 30.0) -> "ServerThread":
        """Start serving; returns once the server accepts requests."""
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="demo-server")
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The demo server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
