"""The serving skeleton both HTTP services mount: access, limits, input checks, metrics, health.

`create_service(title, routers, ...)` returns a FastAPI app with `/healthz`, `/readyz`,
`/metrics` and the OpenAPI pages, and one ASGI middleware (`Guard`) in front of every route:

- **Access.** With a bearer token set, every path needs it except the public ones: `/healthz`
  and `/readyz` always (readiness without the token says only `{"status": "ready"}`; the model's
  thresholds and queues need the token), plus `docs` (`/docs`, `/openapi.json`) and `metrics`
  when the operator opens them (`--public docs,metrics` or `VERTICALS_PUBLIC`). Tokens are
  compared in constant time (`hmac.compare_digest`).
- **Bodies.** At most `max_body_bytes`, enforced while the body streams in (chunked bodies
  included), not only from `Content-Length`. A body must be JSON with a JSON content type (415
  otherwise, with the header to send), valid UTF-8, without NaN/Infinity, without integers of
  more than 64 digits, nested at most `max_json_depth` deep, and without lone UTF-16 surrogates
  in any string (they decode in Python but no tokenizer or UTF-8 writer can take them). Each
  refusal is a 4xx that names the problem.
- **Text fields.** `check_texts` refuses empty text, text with no visible character (zero-width
  spaces, BOMs, soft hyphens...), and text over `max_chars`.
- **Metrics.** Every response is counted in a `finally`, 5xx included, labelled by the matched
  route's template (`/v1/items/{item_id}`), never the raw path, so random paths cannot grow it.
- **Errors.** Validation errors, HTTP errors and UserErrors become `{"error": message}` with a
  4xx; anything else is logged and answers 500 for that request only (answered by the Guard, so
  uvicorn never sees the exception and keeps the client's keep-alive connection).
- **Slow or oversized clients**: see core.serving.server, which runs the app under uvicorn.

Hand-written because FastAPI/Starlette lack it: the JSON checks (Python's json accepts NaN,
surrogates and unbounded nesting), per-template counting, and token rules that cover the
framework's own /docs and /openapi.json. The Guard reads the body once for those checks, so it
also counts the size limit there (Starlette's body-limit middleware would sit after that read).
Leaves out: TLS and rate limiting (put a reverse proxy in front), the services' own routes.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.foundation.errors import UserError
from core.foundation.text import encodable, text_problem
from core.serving.flags import ServeFlags

log = logging.getLogger("verticals.serving")

OPTIONAL_PUBLIC = {"docs": ("/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"), "metrics": ("/metrics",)}
ALWAYS_PUBLIC = ("/healthz", "/readyz")
MAX_INT_DIGITS = 64


@dataclass(frozen=True)
class ServiceLimits:
    max_chars: int = 2000  # per text field
    max_batch: int = 64  # texts (or ids) per request
    max_body_bytes: int = 1_000_000
    batch_size: int = 64  # texts per model call across requests (micro-batching)
    parallel_batches: int = 1  # model calls at once, each on its own thread (one per core with 1-thread ONNX Runtime)
    max_json_depth: int = 32
    max_header_bytes: int = 16_384  # request line + all headers
    request_timeout_s: float = 30.0  # to receive a whole request (headers and body)
    max_id_chars: int = 256


@dataclass(frozen=True)
class Access:
    """Who may call what. `token=None`: everything is open (a loopback or trusted network)."""

    token: str | None = None
    public: frozenset[str] = field(default_factory=frozenset)  # names from OPTIONAL_PUBLIC

    @classmethod
    def from_settings(cls, token: str | None, public: str | None) -> "Access":
        """`public`: comma-separated names from OPTIONAL_PUBLIC (e.g. "docs,metrics"), or None/""."""
        names = frozenset(p.strip() for p in (public or "").split(",") if p.strip())
        unknown = names - set(OPTIONAL_PUBLIC)
        if unknown:
            raise UserError(f"unknown public endpoint group(s) {sorted(unknown)}; choose from {sorted(OPTIONAL_PUBLIC)}")
        return cls(token=token or None, public=names)

    @classmethod
    def from_flags(cls, flags: ServeFlags) -> "Access":
        """Token from VERTICALS_API_TOKEN; public groups from --public (else VERTICALS_PUBLIC: ServeFlags)."""
        return cls.from_settings(os.environ.get("VERTICALS_API_TOKEN"), flags.public)

    def describe(self) -> str:
        """Who may call what, for the line a server prints when it starts."""
        if self.token is None:
            return "without auth (set VERTICALS_API_TOKEN)"
        opened = "".join(", " + name for name in sorted(self.public))
        return f"with bearer-token auth; public without the token: health, readiness{opened}"

    def is_public(self, path: str) -> bool:
        if self.token is None or path in ALWAYS_PUBLIC:
            return True
        return any(path in OPTIONAL_PUBLIC[name] for name in self.public)

    def allows(self, headers: dict[bytes, bytes]) -> bool:
        if self.token is None:
            return True
        given = headers.get(b"authorization", b"")
        return hmac.compare_digest(given, b"Bearer " + self.token.encode("utf-8"))


# --- input checks (pure functions) ---

def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number; send a finite number")


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer with {len(digits)} digits; at most {MAX_INT_DIGITS}")
    return int(digits)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range; send a finite number")
    return value


def json_body_problem(body: bytes, max_depth: int) -> str | None:
    """Why `body` is not acceptable JSON for our services, or None. Checks UTF-8, syntax,
    NaN/Infinity, integer size, nesting depth and lone surrogates in strings and keys."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"body is not valid UTF-8 (byte {exc.start}); send UTF-8 JSON"
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_int=_bounded_int,
                           parse_float=_finite_float)
    except RecursionError:
        return f"JSON nested too deeply; at most {max_depth} levels"
    except ValueError as exc:  # JSONDecodeError is a ValueError, as are the two parse hooks
        return f"body is not valid JSON: {exc}"
    stack = [(value, "$", 1)]
    while stack:
        node, where, depth = stack.pop()
        if depth > max_depth:
            return f"JSON nested too deeply at {where}; at most {max_depth} levels"
        if isinstance(node, str):
            if not encodable(node):
                return f"{where}: text holds a lone UTF-16 surrogate (not valid Unicode); send valid UTF-8 text"
        elif isinstance(node, dict):
            for key, child in node.items():
                if not encodable(key):
                    return f"{where}: a key holds a lone UTF-16 surrogate"
                stack.append((child, f"{where}.{key[:40]}", depth + 1))
        elif isinstance(node, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(node))
    return None


def check_texts(texts: list[str], limits: ServiceLimits, name: str = "texts") -> list[str]:
    """The text fields of a request, or a 4xx naming the first bad one."""
    if not texts:
        raise HTTPException(422, f"{name}: give at least one text")
    if len(texts) > limits.max_batch:
        raise HTTPException(413, f"{name}: {len(texts)} texts; at most {limits.max_batch} per request")
    for i, text in enumerate(texts):
        label = f"{name}[{i}]" if len(texts) > 1 or name == "texts" else name
        if len(text) > limits.max_chars:
            raise HTTPException(413, f"{label}: {len(text)} characters; at most {limits.max_chars}")
        problem = text_problem(text)
        if problem:
            raise HTTPException(422, f"{label}: {problem}")
    return texts


# --- the ASGI guard ---

def _json_error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class Guard:
    """Access, body limit and checks, and the request counter, in front of the whole app
    (a plain ASGI middleware: Starlette's BaseHTTPMiddleware costs ~0.3 ms a request)."""

    BODY_METHODS = ("POST", "PUT", "PATCH")

    def __init__(self, inner, *, access: Access, limits: ServiceLimits, counter, routes):
        self.inner, self.access, self.limits, self.counter = inner, access, limits, counter
        self.routes = routes  # () -> the app's routes, to label requests by template

    def template(self, scope) -> str:
        from starlette.routing import Match  # lazy: an optional extra ([serve])

        for route in self.routes():
            match, _ = route.matches(scope)
            if match != Match.NONE:  # PARTIAL: the path matched, the method did not (a 405)
                return route.path
        return "unmatched"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        status, template = {}, self.template(scope)

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_and_note)
        except ClientGone:  # the client left mid-body: nobody to answer; counted as 499, as nginx does
            status["code"] = 499
        except Exception:  # a bug: answer 500 here, so the server keeps this keep-alive connection open
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if "code" not in status:
                await _json_error(500, "internal error; the request was not processed")(scope, receive, send_and_note)
        finally:
            self.counter.labels(template, str(status.get("code", 500))).inc()

    async def _handle(self, scope, receive, send):
        headers = dict(scope["headers"])
        if not self.access.is_public(scope["path"]) and not self.access.allows(headers):
            response = _json_error(401, "missing or wrong bearer token (send Authorization: Bearer <token>)",
                                   {"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        if scope["method"] not in self.BODY_METHODS:
            return await self.inner(scope, receive, send)
        try:
            body = await self._read_body(headers, receive)
        except BodyTooLarge:  # close the connection: the rest of the body is never read
            return await _json_error(413, f"request body over {self.limits.max_body_bytes} bytes",
                                     {"Connection": "close"})(scope, receive, send)
        if body:
            content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if content_type != b"application/json" and not content_type.endswith(b"+json"):
                shown = content_type.decode("latin-1")[:60] or "none"
                return await _json_error(415, f"the body must be JSON: send the header Content-Type: application/json "
                                              f"(got {shown})")(scope, receive, send)
            problem = json_body_problem(body, self.limits.max_json_depth)
            if problem:
                return await _json_error(400, problem)(scope, receive, send)
        await self.inner(scope, self._replay(body, receive), send)

    async def _read_body(self, headers: dict, receive) -> bytes:
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limits.max_body_bytes:
            raise BodyTooLarge
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    def _replay(body: bytes, receive):
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as a server would

        return replay


# --- the app ---

def _validation_message(exc: RequestValidationError, hint: str) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) + (f" ({hint})" if hint else "")


def create_service(title: str, routers: tuple = (), *, access: Access = Access(),
                   limits: ServiceLimits = ServiceLimits(), info=None, on_start=None, on_stop=None,
                   request_hint: str | dict[str, str] = "") -> FastAPI:
    """The app: `routers` (APIRouters) mounted behind the Guard, plus health, readiness, metrics.

    `info()` -> dict: details for an authorised `/readyz`; `on_start`/`on_stop`: async callables
    run in the lifespan (readiness turns true after `on_start`); `request_hint` is appended to
    validation messages (e.g. the request shape): one for every route, or {path: hint} per route."""
    from prometheus_client import (  # lazy: an optional extra ([serve])
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        generate_latest,
    )

    registry = CollectorRegistry()
    counter = Counter("verticals_requests_total", "HTTP responses by route template and status",
                      ["path", "status"], registry=registry)
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app):
        if on_start:
            await on_start()
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            if on_stop:
                await on_stop()

    app = FastAPI(title=title, version="1", lifespan=lifespan, redirect_slashes=False)
    app.state.registry = registry
    # FastAPI wraps included routers in its own objects; label by the routes themselves
    app.add_middleware(Guard, access=access, limits=limits, counter=counter, routes=lambda: flat_routes)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc: RequestValidationError):
        hint = request_hint.get(request.url.path, "") if isinstance(request_hint, dict) else request_hint
        return _json_error(422, _validation_message(exc, hint))

    @app.exception_handler(StarletteHTTPException)  # also the router's own 404 and 405: {"error"} like the rest
    async def http_error(request, exc: StarletteHTTPException):
        return _json_error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(UserError)
    async def user_error(request, exc: UserError):
        return _json_error(400, str(exc))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request):
        if not state["ready"]:
            return _json_error(503, "model still loading")
        if info is None or not access.allows(dict(request.scope["headers"])):
            return {"status": "ready"}
        return {"status": "ready", **info()}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)
    flat_routes = [r for r in app.router.routes if hasattr(r, "path")] + [r for rt in routers for r in rt.routes]
    return app
