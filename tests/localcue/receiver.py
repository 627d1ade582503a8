"""A real webhook receiver for the tests: the standard library's HTTP server
on a loopback port, in a thread, recording every request it gets and
answering from a script of (status, delay) steps."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    script: list[tuple[int, float]]  # (status, seconds to wait first); the last one repeats
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(
        self, count: int, timeout: float = 20.0, path: str | None = None
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.requests if path is None or r.path == path]
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{len(self.requests)} request(s) after {timeout} s, wanted {count}")


@contextmanager
def receiver(*script: tuple[int, float]) -> Iterator[Receiver]:
    rec = Receiver("", list(script) or [(200, 0.0)])

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            with rec.lock:
                index = len(rec.requests)
                rec.requests.append(
                    Received(self.command, self.path, dict(self.headers.items()), body)
                )
                status, delay = rec.script[min(index, len(rec.script) - 1)]
            time.sleep(delay)
            answer = json.dumps({"received": index + 1}).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:  # the server gave up waiting (a timeout test)
                pass

        do_POST = do_PUT = do_GET = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    rec.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        httpd.shutdown()
        httpd.server_close()
