"""A tiny socket server on 127.0.0.1 for what requests-mock cannot show: timing, TLS, redirects.

Each connection is handed to ``handler(conn, server)`` in its own thread; the server records
what it saw (connections, raw requests) and, on exit, stops its handlers (``server.stopped``)
and closes every socket and thread it opened, so tests run clean under ``filterwarnings=error``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType

Handler = Callable[[socket.socket, "LoopbackServer"], None]


def read_request(conn: socket.socket) -> bytes:
    """The request's head (through the blank line), or what came before the peer stopped."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def request_headers(raw: bytes) -> dict[str, str]:
    """Header names (lower case) and values of a raw request head."""
    lines = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    pairs = (line.split(":", 1) for line in lines if ":" in line)
    return {name.strip().lower(): value.strip() for name, value in pairs}


class LoopbackServer:
    """``with LoopbackServer(handler) as server``: ``server.url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.stopped = threading.Event()
        self.requests: list[bytes] = []
        self.connections = 0
        self.request_seen = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)  # wakes up now and then to notice the stop
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def record(self, raw: bytes) -> None:
        with self._lock:
            self.requests.append(raw)
        self.request_seen.set()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(conn, self)
        except OSError:
            pass  # the client went away (cut by its deadline): nothing to answer
        finally:
            conn.close()

    def __enter__(self) -> LoopbackServer:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopped.set()
        self._acceptor.join()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # wakes handlers blocked reading from a client that stays connected
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join()
        for conn in self._conns:
            conn.close()
        self._listener.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
