"""Request bodies no larger than their route needs: 413 before the service reads more.

Starlette and uvicorn read whatever a client sends; a route that reads the body
(``await request.body()``, a front's ``read_request``) holds it all in memory
before any of its own checks run. :class:`BodyLimit`, the outermost middleware,
answers a request whose ``Content-Length`` is over its path's limit with a 413
problem at once, without reading it (within the limit, the server reads no more
than the declared length), and counts a body sent without one (chunked) as it is
received: past the limit, it answers the 413 itself (unless a response
has started), tells the app the client left, and drops whatever the app sends
after. A request id is bound ahead of it, so its refusals carry one too.

Every path has the default limit (``EXCHANGE_REQUEST_BODY_MAX_BYTES``) unless it is
given one of its own: the device batch upload and the bulk device query carry many
devices by design. WebSocket and lifespan traffic goes through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exchange.api.problems import error_response
from exchange.api.request_context import RequestIdMiddleware
from exchange.kit.errors import DomainError


class BodyTooLarge(DomainError):
    status = 413
    type_slug = "body-too-large"
    title = "Request body too large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body may be at most {limit} bytes on this route", extra={"limit_bytes": limit}
        )


class BodyLimit:
    """Refuses request bodies over their path's limit (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, default: int, per_path: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.default = default
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.default)
        declared = _content_length(scope)
        if declared is not None:
            if declared > limit:
                await error_response(BodyTooLarge(limit), scope["path"])(scope, receive, send)
            else:  # the server reads no more than the declared length: nothing to count
                await self.app(scope, receive, send)
            return
        received = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answered here, whoever was reading (FastAPI would make any error raised
                    # while it parses a body a 400); the app is told the client left, and
                    # whatever it sends from now on is dropped.
                    refused = True
                    if not started:
                        await error_response(BodyTooLarge(limit), scope["path"])(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, watched)


def limit_bodies(app: FastAPI, default: int, per_path: Mapping[str, int] | None = None) -> None:
    """Add :class:`BodyLimit` to `app`, and a request id ahead of it (its refusals carry one, as
    every answer does); called last, so that they are the outermost middleware."""
    app.add_middleware(BodyLimit, default=default, per_path=per_path)
    app.add_middleware(RequestIdMiddleware)


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None when absent (chunked: then the body is counted).

    The HTTP server refuses a malformed or repeated Content-Length before the app is called."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None  # not digits: counted all the same
    return None
