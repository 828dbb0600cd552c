"""Answering a hot route ahead of the app's routing and middleware.

A route taking thousands of requests a second spends more CPU in FastAPI's
per-request machinery (the middleware stack, matching every route in turn,
dependency solving, response validation) than in its own work. A *front* is an
outermost middleware that answers the requests of one such route itself when
they are plainly well formed, exactly as the route would, and passes every
other request on to the app unchanged (with the body it read handed on), so
that anything unusual is answered by FastAPI the usual way.

What a front answers keeps what the app's stack gives every answer: a request
id (bound into the logs and sent back), domain errors as the app's problem
documents (the app's own exception handler renders them), and an unexpected
error logged once and answered with a 500 problem.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from exchange.kit.errors import DomainError


async def read_request(receive: Receive) -> tuple[bytes | None, list[Message]]:
    """The body (None if the client disconnected first) and the messages it came in."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] == "http.disconnect":
            return None, messages
        if not message.get("more_body", False):
            return b"".join(message.get("body", b"") for message in messages), messages


def replaying(messages: list[Message], receive: Receive) -> Receive:
    """`receive` with the messages already received handed out again first."""
    pending = iter(messages)

    async def replay() -> Message:
        message = next(pending, None)
        return await receive() if message is None else message

    return replay


async def domain_problem(scope: Scope, receive: Receive, send: Send, exc: DomainError) -> None:
    """The app's answer to `exc`: its exception handler for the nearest class, as Starlette's
    exception middleware picks it (which never takes the handler of ``Exception`` itself)."""
    handlers = scope["app"].exception_handlers
    kind = next((kind for kind in type(exc).__mro__ if kind in handlers and kind is not Exception), None)
    if kind is None:
        raise exc
    response = await handlers[kind](Request(scope, receive), exc)
    await response(scope, receive, send)
