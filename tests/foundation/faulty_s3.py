"""S3 that fails on purpose: moto's S3 server behind a small HTTP proxy that injects faults.

The proxy forwards every request to a :class:`moto.server.ThreadedMotoServer` unchanged, except
the first ``faults`` requests whose method is in ``methods`` (``faults=None``: every one):

* ``"500"``: answered ``500 InternalError`` by the proxy; S3 never sees the request.
* ``"stall"``: never answered (held past the client's read timeout, then the connection is
  dropped); S3 never sees the request.
* ``"lost-answer"``: forwarded to S3 (which stores the object), then the answer is dropped the
  same way: the client cannot know its PUT succeeded.

``seen`` lists ``(method, path, outcome)`` of every request, for the test to count attempts.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

from moto.server import ThreadedMotoServer

Fault = Literal["500", "stall", "lost-answer"]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "upgrade"}
_INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>injected by the test proxy</Message></Error>"
)


@dataclass
class FaultPlan:
    fault: Fault
    faults: int | None  # None: fail every matching request
    methods: tuple[str, ...] = ("PUT",)
    stall_s: float = 3.0
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self, method: str) -> Fault | None:
        with self._lock:
            if method not in self.methods:
                return None
            injected = sum(1 for m, _, outcome in self.seen if m == method and outcome != "forwarded")
            return self.fault if self.faults is None or injected < self.faults else None

    def record(self, method: str, path: str, outcome: str) -> None:
        with self._lock:
            self.seen.append((method, path, outcome))

    def attempts(self, method: str, path_suffix: str) -> list[str]:
        with self._lock:
            return [outcome for m, p, outcome in self.seen if m == method and p.endswith(path_suffix)]


def _handler(upstream: tuple[str, int], plan: FaultPlan) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # answers botocore's "Expect: 100-continue" at once

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(*upstream, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.getheaders(), resp.read()
            finally:
                conn.close()

        def _drop(self) -> None:
            time.sleep(plan.stall_s)  # past the client's read timeout
            self.close_connection = True

        def _handle(self) -> None:
            body = self._body()
            fault = plan.next_fault(self.command)
            plan.record(self.command, self.path, fault or "forwarded")
            if fault == "500":
                self.send_response(500)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(_INTERNAL_ERROR)))
                self.end_headers()
                self.wfile.write(_INTERNAL_ERROR)
                return
            if fault == "stall":
                self._drop()
                return
            status, headers, payload = self._forward(body)
            if fault == "lost-answer":
                self._drop()
                return
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler


@dataclass
class FaultyS3:
    s3_url: str  # moto itself, for the test's own unfaulted look
    proxy_url: str  # what the store under test talks to
    plan: FaultPlan


@contextmanager
def faulty_s3(plan: FaultPlan) -> Iterator[FaultyS3]:
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    upstream = moto.get_host_and_port()
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream, plan))
    proxy.daemon_threads = True
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield FaultyS3(
            s3_url=f"http://{upstream[0]}:{upstream[1]}",
            proxy_url=f"http://127.0.0.1:{proxy.server_address[1]}",
            plan=plan,
        )
    finally:
        proxy.shutdown()
        proxy.server_close()
        moto.stop()
