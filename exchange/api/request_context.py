"""Request ids: one per request, in every log line and on every response.

A caller may send ``X-Request-ID`` (1-128 characters from ``[A-Za-z0-9._:-]``)
to correlate with its own logs; otherwise the service makes one up. The id is
bound into structlog's context for the whole request, returned in the
``X-Request-ID`` response header and added to problem documents, so an error a
user reports can be found in the logs.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_current_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being handled, or None outside a request."""
    return _current_request_id.get()


def _incoming_request_id(scope: Scope) -> str | None:
    wanted = REQUEST_ID_HEADER.lower().encode("latin-1")
    for name, value in scope.get("headers", ()):
        if name == wanted:
            candidate = value.decode("latin-1")
            return candidate if _VALID_REQUEST_ID.fullmatch(candidate) else None
    return None


class RequestIdMiddleware:
    """Pure ASGI middleware (no response buffering, works with streaming and WebSockets).

    Nested in another (an app's own behind a front or a body limit that binds one first), it
    passes the request on: one id per request, one header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or _current_request_id.get() is not None:
            # Nested: the outermost one bound the id and sends the header.
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        # A WebSocket's messages go out as they are (the header is an HTTP response's): no wrapper
        # on a stream that may carry thousands of frames a second.
        outgoing = send_with_request_id if scope["type"] == "http" else send
        token = _current_request_id.set(request_id)
        try:
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                await self.app(scope, receive, outgoing)
        finally:
            _current_request_id.reset(token)
