"""The HTTP server under both services: uvicorn, with the deadlines and limits it lacks.

uvicorn's httptools protocol has no deadline for a request that arrives slowly (partial headers,
a trickled body, a huge chunk-size line) and no header size limit, so one client can hold a
connection forever. `GuardedHttpProtocol` (a subclass, whose only hand-written part is the
`RequestGuard` mixin) adds both: the whole request must arrive within `request_timeout_s` of the
connection (or of the previous response on a keep-alive connection), or the connection is closed
(408 if a request had begun); request line + headers over `max_header_bytes` get a 431 and the
connection is closed.
`uvicorn_config` wires it in, with a concurrency cap and a short keep-alive; `serve` runs it.
Leaves out: TLS, several worker processes (run several servers behind a proxy).
"""

from __future__ import annotations

import json
from http import HTTPStatus

from core.serving.app import ServiceLimits


class RequestGuard:
    """The whole-request deadline and the header size limit (module docstring), mixed into uvicorn's
    httptools protocol by `guarded_protocol`: a mixin, so that uvicorn loads only when a server starts.
    The protocol's callbacks it overrides call the protocol's own through `super()`."""

    limits: ServiceLimits

    def connection_made(self, transport):
        super().connection_made(transport)
        self._header_bytes = 0
        self._receiving = False
        self._deadline = None
        self._arm()

    def _arm(self):
        self._disarm()
        self._deadline = self.loop.call_later(self.limits.request_timeout_s, self._too_slow)

    def _disarm(self):
        if getattr(self, "_deadline", None) is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self):
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            if self._receiving:  # a request had begun and never finished: say so, then close
                self._send_and_close(408, "request not received in time")
            else:
                self.transport.close()
        elif not self.cycle.response_started:
            self.cycle.disconnected = True  # the app stops waiting for the rest of the body
            self.cycle.message_event.set()
            self._send_and_close(408, "request body not received in time")
        else:
            self.transport.close()

    def _send_and_close(self, status: int, message: str):
        body = json.dumps({"error": message}).encode()
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        self.transport.write(head + body)
        self.transport.close()

    def on_message_begin(self):
        super().on_message_begin()
        self._header_bytes = 0
        self._receiving = True
        if self._deadline is None:
            self._arm()

    def _count(self, n: int):
        self._header_bytes += n
        if self._header_bytes > self.limits.max_header_bytes and not self.transport.is_closing():
            self._send_and_close(431, f"request line and headers over {self.limits.max_header_bytes} bytes")

    def on_url(self, url: bytes):
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes):
        super().on_header(name, value)
        self._count(len(name) + len(value) + 4)

    def on_headers_complete(self):
        if self.transport.is_closing():
            return
        super().on_headers_complete()

    def on_body(self, body: bytes):
        if self.transport.is_closing() or self.cycle is None:
            return
        super().on_body(body)

    def on_message_complete(self):
        self._receiving = False
        self._disarm()
        if self.transport.is_closing() or self.cycle is None:
            return
        super().on_message_complete()

    def on_response_complete(self):
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def data_received(self, data: bytes):
        if self.transport.is_closing():
            return
        super().data_received(data)

    def connection_lost(self, exc):
        self._disarm()
        super().connection_lost(exc)


def guarded_protocol(limits: ServiceLimits):
    """uvicorn's httptools protocol with a whole-request deadline and a header size limit."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # lazy: an optional extra ([serve])

    return type("GuardedHttpProtocol", (RequestGuard, HttpToolsProtocol), {"limits": limits})


def uvicorn_config(app, host: str, port: int, limits: ServiceLimits = ServiceLimits(), **kwargs):
    import uvicorn  # lazy: an optional extra ([serve])

    kwargs.setdefault("log_level", "warning")
    return uvicorn.Config(app, host=host, port=port, http=guarded_protocol(limits), limit_concurrency=1000,
                          timeout_keep_alive=5, **kwargs)


def serve(app, host: str, port: int, limits: ServiceLimits = ServiceLimits()) -> None:
    import uvicorn  # lazy: an optional extra ([serve])

    uvicorn.Server(uvicorn_config(app, host, port, limits)).run()
