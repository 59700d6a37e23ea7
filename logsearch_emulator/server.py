"""HTTP/1.1 keep-alive server around `EmulatorApp`, and the in-process `running_emulator` helper.

Nagle's algorithm is disabled on every accepted socket: with keep-alive, the response headers
and body would otherwise wait for the client's delayed ACK (~40 ms per request). Each response
is written with one `sendall` (status line, headers and body together).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from logsearch_emulator.app import EmulatorApp
from logsearch_emulator.options import EmulatorOptions

_REASONS = BaseHTTPRequestHandler.responses


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, add=True)
        self.server.app.count_connection()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging (it would dominate the serving cost)."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        response = self.server.app.handle(method, self.path, self.headers, body, host)
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        reason = _REASONS.get(response.status, ("",))[0]
        lines = [f"HTTP/1.1 {response.status} {reason}", f"Content-Length: {len(response.body)}"]
        lines.extend(f"{k}: {v}" for k, v in response.headers.items())
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + response.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    # Bound over AF_INET, so `server_bind` stores `getsockname()`'s (str host, int port).
    server_address: tuple[str, int]

    def __init__(self, address: tuple[str, int], app: EmulatorApp) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_all_connections(self) -> None:
        """Close keep-alive connections so no handler thread outlives the server."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class RunningEmulator:
    """A started emulator: its URL, key, logs, ground truth and live options."""

    def __init__(
        self, options: EmulatorOptions | None = None, port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self.app = EmulatorApp(options or EmulatorOptions())
        self._server = _Server((host, port), self.app)
        self.host, self.port = self._server.server_address[:2]
        self.base_url = f"http://{self.host}:{self.port}"
        self._thread: threading.Thread | None = None

    # --- lifecycle
    def start(self) -> RunningEmulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until `stop()` (the CLI)."""
        self._server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.close_all_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the contract
    @property
    def options(self) -> EmulatorOptions:
        return self.app.options

    @property
    def api_key(self) -> str:
        return self.app.options.api_key

    @property
    def log_ids(self) -> list[str]:
        return [log.id for log in self.app.data.logs]

    @property
    def logsets(self) -> list[dict]:
        data = self.app.data
        return [
            {"id": ls.id, "name": ls.name, "log_ids": [data.logs[i].id for i in ls.log_indexes]}
            for ls in data.logsets
        ]

    def update_options(self, **changes: Any) -> EmulatorOptions:
        return self.app.update_options(**changes)

    def truth(
        self, from_ms: int, to_ms: int, log_id: str | None = None
    ) -> list[tuple[str, int, str]]:
        """Keys (log_id, timestamp, sequence_number_str) retained and visible now with
        from <= timestamp < to (half-open whatever the query options)."""
        return self.app.truth(from_ms, to_ms, log_id)

    def event_times(
        self, from_ms: int, to_ms: int, log_id: str | None = None
    ) -> dict[tuple[str, int, str], int | None]:
        """The same keys as `truth()` -> the time written into each message (epoch ms) or
        None when the message carries no time (ground truth for event-time extraction)."""
        return self.app.event_times(from_ms, to_ms, log_id)

    def stats(self) -> dict:
        return self.app.stats()

    def events(self, log_id: str, from_ms: int, to_ms: int) -> list[dict]:
        return self.app.events(log_id, from_ms, to_ms, self.base_url)

    def now_ms(self) -> int:
        """The emulator's clock (fixed_now_ms when set)."""
        return self.app.now_ms()


@contextlib.contextmanager
def running_emulator(
    options: EmulatorOptions | None = None, port: int = 0, host: str = "127.0.0.1"
) -> Iterator[RunningEmulator]:
    """Start an emulator in a background thread on `host` (loopback) and stop it afterwards."""
    emulator = RunningEmulator(options, port=port, host=host).start()
    try:
        yield emulator
    finally:
        emulator.stop()
