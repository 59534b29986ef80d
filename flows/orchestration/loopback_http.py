"""The small HTTP servers `hybridops serve` hosts on 127.0.0.1 (landing webhook, answering service): JSON
answers, bounded bodies, a threaded server started and stopped beside the runner."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


class JsonHandler(BaseHTTPRequestHandler):
    """Answers JSON; reads a body only with a Content-Length within `max_body` (411/413 otherwise)."""

    timeout = 10  # a silent client frees its thread
    max_body = 1 << 20

    def authorized_body(self, path: str, authorized: Callable[[str], bool]) -> bytes | None:
        """The body of a POST to `path` whose Authorization header passes, or None after answering 404, 401
        (logged without the header), 411 or 413."""
        if self.path != path:
            self.send_json(404, {"error": "not found"})
            return None
        if not authorized(self.headers.get("Authorization", "")):
            log.warning("%s: POST from %s rejected: missing or wrong token", self.server_version, self.client_address[0])
            self.send_json(401, {"error": "unauthorized"}, {"WWW-Authenticate": "Bearer"})
            return None
        return self.read_body()

    def read_body(self) -> bytes | None:
        """The request body, or None after answering 411/413."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.send_json(411, {"error": "Content-Length required"})
            return None
        if not 0 <= length <= self.max_body:
            self.send_json(413, {"error": f"body over {self.max_body} bytes"})
            return None
        return self.rfile.read(length)

    def send_json(self, code: int, body: dict | None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body, default=str, ensure_ascii=False).encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (every request would go to stderr)
        log.debug(f"{self.server_version}: " + format, *args)


class LoopbackServer(ThreadingHTTPServer):
    """A threaded server on 127.0.0.1 (bound at construction: OSError when the port is taken), serving from a
    daemon thread between `start` and `stop`."""

    daemon_threads = True
    request_queue_size = 64  # the default backlog of 5 drops parallel senders' connections for a second

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", port), handler)

    def start(self, name: str) -> None:
        threading.Thread(target=self.serve_forever, name=name, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
