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

from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exchange.api.problems import UnhandledErrorMiddleware
from exchange.api.request_context import RequestIdMiddleware
from exchange.kit.errors import DomainError

_TAKEN = "exchange.front_taken"  # the scope key of what a front's `take` returned


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


class Front:
    """An outermost middleware answering the plainly well-formed requests of a hot route.

    A subclass says which requests it takes (:meth:`take`, which may read the body: the
    messages it read go on to the app, or to :meth:`answer`, all the same) and how it answers
    them (:meth:`answer`). What it takes is answered behind a request id middleware and an
    unexpected-error middleware of its own (the app's are further in), with domain errors
    raised before anything is sent answered by the app's handler; everything else goes on to
    the app as it came.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._answering = RequestIdMiddleware(UnhandledErrorMiddleware(self._answer))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            taken, receive = await self.take(scope, receive)
            if taken is not None:
                scope[_TAKEN] = taken
                await self._answering(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def take(self, scope: Scope, receive: Receive) -> tuple[Any, Receive]:
        """What :meth:`answer` needs of this HTTP request, or None to leave it to the app; and
        the `receive` to go on with (handing out again what was read)."""
        raise NotImplementedError

    async def answer(self, scope: Scope, receive: Receive, send: Send, taken: Any) -> None:
        """Answer a request :meth:`take` took; a domain error must leave before anything is sent."""
        raise NotImplementedError

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.answer(scope, receive, send, scope.pop(_TAKEN))
        except DomainError as exc:  # raised before anything is sent, as the route's would be
            await domain_problem(scope, receive, send, exc)
