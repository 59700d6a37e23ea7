"""A TCP proxy on loopback that can hold requests: a network stall a test switches on and off.

Bytes flow both ways unchanged until ``hold(pattern, ...)`` is set; from then on, the first
chunk a client sends that contains one of the patterns (an HTTP request line such as
``PUT /bucket/data/events/part-``) is held, with everything after it on that connection, until
``release()``. The server never sees a held request, so the client waits for an answer, as it
would behind a stalled proxy or in a paused VM. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

_CHUNK = 1 << 16


class StallingProxy:
    """Forwards 127.0.0.1:<port> to ``upstream`` (``http://host:port``)."""

    def __init__(self, upstream: str, *, max_hold_seconds: float = 120.0) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname is not None
        assert parts.port is not None
        self._upstream = (parts.hostname, parts.port)
        self._max_hold = max_hold_seconds
        self._patterns: tuple[bytes, ...] = ()
        self._released = threading.Event()
        self.held = threading.Event()  # set once a request is being held
        self.held_requests: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)

    @property
    def url(self) -> str:
        """The proxy's endpoint, for AWS_ENDPOINT_URL."""
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def hold(self, *patterns: bytes) -> None:
        """From now on, hold each request whose first chunk contains one of ``patterns``."""
        self._released.clear()
        self._patterns = patterns

    def release(self) -> None:
        """Forward what was held, and hold nothing more."""
        self._patterns = ()
        self._released.set()

    def __enter__(self) -> StallingProxy:
        self._accepter.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        self._stop.set()
        self._accepter.join(timeout=10)
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self._upstream, timeout=30)
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink, watch in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(
                    target=self._pump, args=(source, sink, watch), name="proxy-pump", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _chunks(self, source: socket.socket) -> Iterator[bytes]:
        while True:
            try:
                chunk = source.recv(_CHUNK)
            except OSError:
                return
            if not chunk:
                return
            yield chunk

    def _pump(self, source: socket.socket, sink: socket.socket, watch: bool) -> None:
        for chunk in self._chunks(source):
            if watch and any(pattern in chunk for pattern in self._patterns):
                self.held_requests.append(chunk.split(b"\r\n", 1)[0])
                self.held.set()
                self._released.wait(self._max_hold)
            try:
                sink.sendall(chunk)
            except OSError:
                return
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
