"""The guard in front of the prediction API: API key, content type, body size, request schema, error shape.

:class:`RequestGuard` is a plain ASGI middleware (no per-request task or thread) installed on the BentoML
service. For every HTTP request it, in order:

1. lets the probes (``/livez``, ``/readyz``, ``/healthz``) and ``/metrics`` through without a key;
2. checks ``X-API-Key`` against ``STRATA_API_KEY`` or ``serving.api_key`` (constant-time compare) -> 401;
   then refuses a path with a trailing slash (``/predict/``) -> 404, not the framework's empty 307;
3. refuses bodies that are not JSON, including BentoML's pickle content type -> 415;
4. refuses bodies larger than ``serving.max_body_bytes`` before reading them whole -> 413;
5. offers the body to the route's fast handler, if it has one: a handler may answer a request of
   the common, simple shape itself (no framework routing, no pydantic model built) or decline, and
   a declined request continues below, so every unusual request gets the full path's answer;
6. validates the JSON body against the pydantic model of the route -> 400 (not JSON) or 422 (schema),
   naming each offending field and value;
7. rewrites any other error response (404, 405, a framework 400/500, a 503 from ``/readyz``) into the
   one error shape ``{"error": {"code", "field", "message", "details"}}``, so no framework text, stack
   trace or file path reaches a client.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from features.config import StrataConfig

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
FastHandler = Callable[[bytes], Awaitable["tuple[int, bytes] | None"]]
"""``handler(body) -> (status, JSON body)`` answering a request itself, or None to decline it."""

API_KEY_ENV = "STRATA_API_KEY"
API_KEY_HEADER = "x-api-key"
#: Paths answered without an API key: orchestrator probes and the Prometheus scrape.
OPEN_PATHS: frozenset[str] = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
_JSON_TYPES = frozenset({"application/json"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# A client that ignores a 413 and keeps sending is read (and discarded) up to this multiple of the
# limit so it can receive the answer; past that the connection is simply closed by the server.
_DRAIN_FACTOR = 16
_MAX_VALUE_CHARS = 60
_MAX_DETAILS = 20

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "not_ready",
}
_STATUS_MESSAGES = {
    404: "no such endpoint; see /docs.json for the API",
    405: "method not allowed on this endpoint",
    500: "an unexpected error occurred; it has been logged on the server",
    503: "the service is not ready: no model is loaded yet (see /readyz)",
}


@dataclass(frozen=True)
class GuardSettings:
    """What the guard enforces. ``api_key`` None means no authentication (the API is open)."""

    api_key: str | None
    max_body_bytes: int
    open_paths: frozenset[str] = field(default=OPEN_PATHS)


def guard_settings(config: StrataConfig, environ: Mapping[str, str] | None = None) -> GuardSettings:
    """Settings from the configuration; ``STRATA_API_KEY`` (if set and non-empty) overrides the key."""
    env = os.environ if environ is None else environ
    key = env.get(API_KEY_ENV) or config.serving.api_key
    return GuardSettings(api_key=key or None, max_body_bytes=config.serving.max_body_bytes)


def error_payload(
    status: int, message: str, *, field: str | None = None, code: str | None = None,
    details: Iterable[tuple[str | None, str]] = (),
) -> dict[str, Any]:
    """The error body every failure uses: ``{"error": {"code", "field", "message", "details"}}``."""
    items = [{"field": f, "message": m} for f, m in details][:_MAX_DETAILS]
    if not items:
        items = [{"field": field, "message": message}]
    return {
        "error": {
            "code": code or _STATUS_CODES.get(status, "internal" if status >= 500 else "bad_request"),
            "field": field,
            "message": message,
            "details": items,
        }
    }


def encode_error(
    status: int, message: str, *, field: str | None = None, code: str | None = None,
    details: Iterable[tuple[str | None, str]] = (),
) -> bytes:
    """:func:`error_payload` serialized as compact JSON bytes."""
    payload = error_payload(status, message, field=field, code=code, details=details)
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def field_path(loc: Iterable[Any]) -> str:
    """``("orders", 3, "amount")`` -> ``"orders[3].amount"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def describe_value(value: Any) -> str:
    """A short, safe rendering of a client value for an error message (never more than ~60 chars)."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, dict):
        text = "an object"
    elif isinstance(value, list):
        text = f"a list of {len(value)}"
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


# Members of ``FeatureValue`` (float | str | None): pydantic reports one error per member.
_UNION_TAGS = {"float": "a finite number", "str": "a string"}


def validation_details(err: ValidationError) -> list[tuple[str, str]]:
    """(field, message) per problem of a pydantic error, union alternatives folded into one message."""
    out: list[tuple[str, str]] = []
    folded: dict[str, int] = {}
    for e in err.errors(include_url=False):
        loc = list(e["loc"])
        value = e.get("input")
        if loc and isinstance(loc[-1], str) and loc[-1] in _UNION_TAGS and len(loc) >= 2:
            path = field_path(loc[:-1])
            if path in folded:
                continue
            folded[path] = len(out)
            out.append((path, f"must be a finite number, a string or null (got {describe_value(value)})"))
            continue
        path = field_path(loc) or "body"
        msg = str(e["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if e["type"] == "missing":
            out.append((path, "is required"))
        elif e["type"] == "extra_forbidden":
            out.append((path, "is not a known field"))
        elif e["type"] == "json_invalid":
            out.append(("body", f"is not valid JSON: {e.get('ctx', {}).get('error', msg)}"))
        else:
            out.append((path, f"{msg[:1].lower()}{msg[1:]} (got {describe_value(value)})"))
    return out


class _ErrorResponse(Exception):
    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or []


async def send_json(send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Send a complete JSON response."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestGuard:
    """ASGI middleware enforcing authentication, content type, body size and request schemas.

    Parameters
    ----------
    app
        The wrapped ASGI application.
    settings_loader
        Called once (on the first request or at startup) to get the :class:`GuardSettings`; loading
        lazily keeps configuration out of import time.
    request_models
        Route path -> pydantic model its JSON body must validate against.
    key_required_paths
        Paths that demand a configured API key even when none is set (e.g. ``/admin/reload``).
    fast_routes
        Route path -> :data:`FastHandler`, called with the body of a POST that passed the key, type
        and size checks, before the schema validation. It answers the request (the wrapped app is not
        called) or returns None, and the request goes on through validation and the wrapped app.
        A handler that raises gets the same 500 the wrapped app's failure would give.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings_loader: Callable[[], GuardSettings],
        request_models: Mapping[str, type[BaseModel]] | None = None,
        key_required_paths: Iterable[str] = (),
        fast_routes: Mapping[str, FastHandler] | None = None,
    ) -> None:
        self.app = app
        self._settings_loader = settings_loader
        self._settings: GuardSettings | None = None
        self._request_models = dict(request_models or {})
        self._key_required = frozenset(key_required_paths)
        self._fast_routes = dict(fast_routes or {})

    @property
    def settings(self) -> GuardSettings:
        if self._settings is None:
            self._settings = self._settings_loader()
        return self._settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                _ = self.settings  # fail at startup, not at the first request, on a bad config
            await self.app(scope, receive, send)
            return
        try:
            body = await self._check_request(scope, receive)
            if body is not None:
                handler = self._fast_routes.get(scope["path"])
                if handler is not None:
                    answer = await handler(body)
                    if answer is not None:
                        await send_json(send, answer[0], answer[1])
                        return
                model = self._request_models.get(scope["path"])
                if model is not None:
                    _validate(model, body)
        except _ErrorResponse as err:
            await send_json(send, err.status, err.body, err.headers)
            return
        except Exception:  # noqa: BLE001  (a bug here must still answer in the API's error shape)
            logger.exception("request guard failed on %s %s", scope.get("method"), scope.get("path"))
            await send_json(send, 500, encode_error(500, _STATUS_MESSAGES[500]))
            return
        if body is not None:
            receive = _replay(body, receive)
        await self.app(scope, receive, _normalizing_send(send))

    async def _check_request(self, scope: Scope, receive: Receive) -> bytes | None:
        """Raise :class:`_ErrorResponse` on a refused request; return the buffered body (or None).

        Everything but the schema, which the caller checks after offering the body to a fast handler.
        """
        settings = self.settings
        path: str = scope["path"]
        if path in settings.open_paths:
            return None
        headers = _headers(scope)
        if path in self._key_required and not settings.api_key:
            raise _ErrorResponse(
                403,
                encode_error(403, f"{path} is disabled: set {API_KEY_ENV} or serving.api_key to enable it",
                             field="X-API-Key"),
            )
        if settings.api_key is not None:
            given = headers.get(API_KEY_HEADER)
            if given is None:
                raise _ErrorResponse(401, encode_error(401, "missing X-API-Key header", field="X-API-Key"))
            if not hmac.compare_digest(given.encode("latin-1"), settings.api_key.encode("utf-8")):
                raise _ErrorResponse(401, encode_error(401, "invalid API key", field="X-API-Key"))
        if len(path) > 1 and path.endswith("/"):
            # No endpoint ends with a slash; Starlette would answer an empty 307 to the path without it.
            raise _ErrorResponse(404, encode_error(404, _STATUS_MESSAGES[404]))
        if scope["method"] not in _BODY_METHODS:
            return None
        declared = headers.get("content-length")
        length: int | None = None
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise _ErrorResponse(
                    400, encode_error(400, f"Content-Length {describe_value(declared)} is not a number",
                                      field="Content-Length"),
                ) from None
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type and content_type not in _JSON_TYPES:
            raise _ErrorResponse(415, _unsupported(content_type))
        limit = settings.max_body_bytes
        if length is not None and length > limit:
            await _drain(receive, min(length, limit * _DRAIN_FACTOR))
            raise _ErrorResponse(413, _too_large(length, limit), [(b"connection", b"close")])
        body = await _read_body(receive, limit)
        if body is None:
            raise _ErrorResponse(413, _too_large(None, limit), [(b"connection", b"close")])
        if not content_type and body:
            # An empty body needs no type (it means "no arguments"); anything else must say it is JSON.
            raise _ErrorResponse(415, _unsupported(""))
        return body


def _unsupported(content_type: str) -> bytes:
    shown = describe_value(content_type) if content_type else "none"
    return encode_error(415, f"Content-Type must be application/json (got {shown})", field="Content-Type")


def _too_large(length: int | None, limit: int) -> bytes:
    size = f"{length} bytes" if length is not None else "larger than the limit"
    return encode_error(
        413, f"request body is {size}; the limit is {limit} bytes (serving.max_body_bytes)", field="body"
    )


def _validate(model: type[BaseModel], body: bytes) -> None:
    try:
        model.model_validate_json(body or b"{}")
    except ValidationError as err:
        details = validation_details(err)
        status = 400 if any(f == "body" and m.startswith("is not valid JSON") for f, m in details) else 422
        first_field, first_msg = details[0]
        raise _ErrorResponse(
            status,
            encode_error(status, f"{first_field}: {first_msg}", field=first_field, details=details,
                         code="invalid_json" if status == 400 else "invalid_request"),
        ) from None


_WANTED_HEADERS = {b"x-api-key": "x-api-key", b"content-type": "content-type", b"content-length": "content-length"}


def _headers(scope: Scope) -> dict[str, str]:
    """The few request headers the guard reads (ASGI servers give header names in lower case)."""
    out: dict[str, str] = {}
    for k, v in scope.get("headers", ()):
        name = _WANTED_HEADERS.get(k) or _WANTED_HEADERS.get(k.lower())
        if name is not None:
            out[name] = v.decode("latin-1")
    return out


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _drain(receive: Receive, budget: int) -> None:
    read = 0
    while read <= budget:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _is_error_shape(body: bytes) -> bool:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    err = data.get("error") if isinstance(data, dict) else None
    return isinstance(err, dict) and "code" in err and "message" in err


def _normalizing_send(send: Send) -> Send:
    """Wrap ``send`` so error responses not already in the API's error shape are rewritten into it."""
    state: dict[str, Any] = {"start": None, "chunks": []}

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            if message["status"] < 400:
                state["start"] = False
                await send(message)
                return
            state["start"] = message
            return
        start = state["start"]
        if not start or message["type"] != "http.response.body":
            await send(message)
            return
        state["chunks"].append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(state["chunks"])
        status = start["status"]
        if _is_error_shape(body):
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        if status >= 500 and status != 503:
            logger.warning("rewrote a %d response from the framework: %r", status, body[:200])
        message_text = _STATUS_MESSAGES.get(status) or _framework_message(body) or "request refused"
        new_body = encode_error(status, message_text)
        passthrough = [
            (k, v) for k, v in start.get("headers", [])
            if k.lower() not in (b"content-type", b"content-length")
        ]
        await send_json(send, status, new_body, passthrough)

    return wrapped


def _framework_message(body: bytes) -> str | None:
    """A client-safe message from a framework 4xx body (BentoML's ``{"error": "..."}``), if any."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        text = data["error"]
        return text if len(text) <= 200 and "/" not in text else None
    return None
