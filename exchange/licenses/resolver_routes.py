"""The resolver's routes: ``GET /v1/devices/{scheme}/{id}``, ``POST /v1/devices/query`` and the
Digital Link paths (``/01/…``, ``/imei/…``, ``/serial/…``).

They need only ``app.state.resolver``, so the full service and the resolver-only app
(``exchange licence resolver``) serve the same routes.

The two query routes are the hot path, thousands of requests a second, and FastAPI's request
handling (dependency solving, body validation, response building) costs more CPU than the
lookup itself. Each is a :class:`LeanRoute`: declared, documented and validated like any
FastAPI route, but a request it is made for (JSON asked for, a well-formed body, no query
string) is answered by a plain ASGI handler that calls the same resolver and writes the same
bytes. Anything else — an HTML page, a malformed body, an unexpected parameter — goes to
FastAPI's own handling of the declared endpoint, so refusals are FastAPI's validation problems
as before. Domain errors raised on the lean path reach the app's one problem handler like
those of any route (they leave the route the same way), so every error document is the same.

In the resolver-only app the lean handlers sit even further out, ahead of the app's routing and
middleware (:class:`LeanFront`): there, nothing but these two routes lives under ``/v1/devices``,
and FastAPI's routing and middleware cost more than the lookup. The requests the front takes get
the app's request id, unexpected-error and problem handling all the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from exchange.api.front import Front, read_request, replaying
from exchange.api.problems import problem_responses
from exchange.kit.errors import DomainError, ValidationFailed
from exchange.licenses.device_ids import MAX_INPUT_LENGTH, DeviceId, parse_device_id, parse_digital_link
from exchange.licenses.lifespan import resolver_of
from exchange.licenses.pages import device_page, refusal_page, wants_html
from exchange.licenses.resolver import MAX_BULK_DEVICES, YIELD_EVERY, Resolver, chunk_starts
from exchange.licenses.schemas import DeviceAnswer, DeviceQueryBatchedOut, DeviceQueryIn, DeviceQueryOut
from exchange.licenses.uploads import TooManyDevices

ResolverDep = Annotated[Resolver, Depends(resolver_of)]
# A lean handler answers the request, or hands it to the last argument: the standard handling.
LeanHandler = Callable[[Scope, Receive, Send, ASGIApp], Awaitable[None]]

_lean_handlers: dict[Callable[..., Any], LeanHandler] = {}


class LeanRoute(APIRoute):
    """An APIRoute whose requests a plain ASGI handler sees first.

    The handler (registered for the endpoint with :func:`served_lean_by`) gets the scope with
    the path parameters matched; it answers, or passes the request to :meth:`standard`.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.lean = _lean_handlers.get(endpoint)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.lean is None or scope["method"] not in (self.methods or ()):
            await super().handle(scope, receive, send)
        else:
            await self.lean(scope, receive, send, self.standard)

    async def standard(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's handling of the declared endpoint."""
        await super().handle(scope, receive, send)


def served_lean_by(
    handler: LeanHandler,
) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
    def register(endpoint: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        _lean_handlers[endpoint] = handler
        return endpoint

    return register


# Without a prefix, so that ``device_routes.router`` (``/v1/devices``) can include it after its own
# routes; the resolver-only app mounts it as ``router``, defined at the end.
query_router = APIRouter(tags=["devices"], route_class=LeanRoute)
link_router = APIRouter(tags=["devices"])


# --- answers, shared by both paths --------------------------------------------------------------------


async def query_answer(resolver: Resolver, references: list[str], *, proofs: bool, layout: str) -> bytes:
    if len(references) > MAX_BULK_DEVICES:
        raise TooManyDevices(
            f"{len(references)} devices in one query; at most {MAX_BULK_DEVICES}",
            extra={"limit": MAX_BULK_DEVICES},
        )
    head: dict[str, Any] = {"chain_id": resolver.registry.chain_id, "registry": resolver.registry.address}
    # The bytes orjson writes for the whole document, its lists written a chunk at a time with the
    # event loop running between: the document up to a list's opening bracket, each chunk's items
    # without their brackets, commas between, and the closing brackets.
    parts: list[bytes | memoryview] = []
    if layout == "batches":
        block, batches, answers = await resolver.resolve_batched(references, proofs=proofs)
        head |= {"block": block, "proofs": proofs}
        parts.append(orjson.dumps({**head, "batches": []})[:-2])
        await _write_chunks(parts, batches, _BATCHES_PER_CHUNK)
        parts.append(b'],"devices":[')
        await asyncio.sleep(0)
    else:
        block, answers = await resolver.resolve_references(references, proofs=proofs)
        head["block"] = block
        parts.append(orjson.dumps({**head, "devices": []})[:-2])
    await _write_chunks(parts, answers, YIELD_EVERY)
    parts.append(b"]}")
    return b"".join(parts)


# Batches of a batched answer per chunk of JSON writing: a batch has a few dozen levels at most,
# and few batches are large (those of many devices hold nodes as one hex string per level).
_BATCHES_PER_CHUNK: Final = 50


async def _write_chunks(parts: list[bytes | memoryview], items: list[Any], size: int) -> None:
    """`items` as JSON without the list's brackets, `size` items at a time, the event loop running
    between chunks."""
    async for start in chunk_starts(len(items), size):
        if start:
            parts.append(b",")
        parts.append(memoryview(orjson.dumps(items[start : start + size]))[1:-1])


async def device_answer(resolver: Resolver, device: DeviceId) -> dict[str, Any]:
    _, answers = await resolver.resolve([device])
    return answers[0]


def _device_response(request: Request, answer: dict[str, Any]) -> Response:
    if wants_html(request.headers.get("accept")):
        response = Response(device_page(answer), media_type="text/html; charset=utf-8")
    else:
        response = Response(orjson.dumps(answer), media_type="application/json")
    response.headers["Vary"] = "Accept"
    return response


# --- the lean path ------------------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _send_json(send: Send, body: bytes, *extra: tuple[bytes, bytes]) -> None:
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json"), *extra]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_LAYOUTS: Final = frozenset(("devices", "batches"))


def _well_formed_query(scope: Scope, body: bytes | None) -> tuple[list[str], bool, str] | None:
    """The devices, the proofs flag and the layout of a body exactly as the lean path takes it,
    else None."""
    if body is None or scope["query_string"] or _header(scope, b"content-type") != "application/json":
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not data.keys() <= {"devices", "proofs", "layout"}:
        return None
    devices, proofs, layout = data.get("devices"), data.get("proofs", True), data.get("layout", "devices")
    if (
        type(devices) is not list
        or type(proofs) is not bool
        or type(layout) is not str
        or layout not in _LAYOUTS
        or not all(type(item) is str for item in devices)
    ):
        return None
    return devices, proofs, layout


def _takes_device(scope: Scope) -> bool:
    """Whether the lean path answers this request for one device (JSON, no query string)."""
    return not scope["query_string"] and not wants_html(_header(scope, b"accept"))


async def _answer_device(scope: Scope, send: Send) -> None:
    parameters = scope["path_params"]
    device = parse_device_id(parameters["scheme"], parameters["device_id"])
    answer = await device_answer(scope["app"].state.resolver, device)
    await _send_json(send, orjson.dumps(answer), (b"vary", b"Accept"))


async def _answer_query(scope: Scope, send: Send, query: tuple[list[str], bool, str]) -> None:
    devices, proofs, layout = query
    answer = await query_answer(scope["app"].state.resolver, devices, proofs=proofs, layout=layout)
    await _send_json(send, answer)


async def _lean_query(scope: Scope, receive: Receive, send: Send, standard: ASGIApp) -> None:
    body, messages = await read_request(receive)
    if body is None:
        raise ClientDisconnect
    query = _well_formed_query(scope, body)
    if query is None:
        await standard(scope, replaying(messages, receive), send)
        return
    await _answer_query(scope, send, query)


async def _lean_device(scope: Scope, receive: Receive, send: Send, standard: ASGIApp) -> None:
    if not _takes_device(scope):
        await standard(scope, receive, send)
        return
    await _answer_device(scope, send)


# --- the lean path ahead of routing (the resolver-only app) -------------------------------------------

_DEVICES_PREFIX = "/v1/devices/"
_QUERY_PATH = "/v1/devices/query"
QUERY_BODY_MAX_BYTES = MAX_BULK_DEVICES * (MAX_INPUT_LENGTH + 8) + 64 * 1024
"""The largest bulk query body: the most devices, each at the longest input, quoted, and room."""
BODY_LIMITS = {_QUERY_PATH: QUERY_BODY_MAX_BYTES}
"""The resolver's routes whose bodies may be larger than the app's default (``exchange.api.body_limit``)."""


def _device_path_params(path: str) -> dict[str, str] | None:
    """The parameters ``/v1/devices/{scheme}/{device_id:path}`` takes from `path`, else None.

    As Starlette's pattern (``[^/]+``, then ``.*`` and ``$``, which a line feed stops) matches:
    a path with a line feed is left to the routing.
    """
    if not path.startswith(_DEVICES_PREFIX) or "\n" in path:
        return None
    scheme, slash, device_id = path[len(_DEVICES_PREFIX) :].partition("/")
    if not slash or not scheme:
        return None
    return {"scheme": scheme, "device_id": device_id}


class LeanFront(Front):
    """The resolver-only app's outermost middleware: its two query routes, ahead of routing.

    ``GET /v1/devices/{scheme}/{device_id:path}`` and ``POST /v1/devices/query`` are the only
    routes of that app under ``/v1/devices``, so a request with such a method and path would be
    routed to one of them. When the route's lean handler would take the request (the same
    checks: no query string, JSON, a well-formed body), this middleware answers it straight
    away, the way that handler does (see ``exchange.api.front``): the request id, its log
    binding and every error document are those the app's stack gives. Everything else goes on
    to the app as it came (a body read here is handed on), so the route's FastAPI handling or
    the routing answers it, as before.
    """

    async def take(self, scope: Scope, receive: Receive) -> tuple[Any, Receive]:
        method = scope["method"]
        if method == "GET":
            parameters = _device_path_params(scope["path"])
            if parameters is not None and _takes_device(scope):
                scope["path_params"] = parameters
                return parameters, receive
        elif method == "POST" and scope["path"] == _QUERY_PATH:
            body, messages = await read_request(receive)
            return _well_formed_query(scope, body), replaying(messages, receive)
        return None, receive

    async def answer(self, scope: Scope, receive: Receive, send: Send, taken: Any) -> None:
        if scope["method"] == "GET":
            await _answer_device(scope, send)
        else:
            await _answer_query(scope, send, taken)


# --- routes -------------------------------------------------------------------------------------------

_ANSWER_DOC = {
    200: {
        "description": "The device's licence; HTML when the client prefers it (browsers).",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/DeviceAnswer"}},
            "text/html": {"schema": {"type": "string"}},
        },
    },
    **problem_responses(ValidationFailed),
}


@query_router.post(
    "/query",
    response_model=DeviceQueryOut | DeviceQueryBatchedOut,
    summary="Licences of many devices",
    responses=problem_responses(ValidationFailed, TooManyDevices),
)
@served_lean_by(_lean_query)
async def post_query(body: DeviceQueryIn, resolver: ResolverDep) -> Response:
    """Up to 10,000 devices (scheme-prefixed ids or Digital Link URIs) in one answer, in the
    order asked; each answer equals the single-device answer. With ``"proofs": false`` the
    answers leave out the Merkle proofs (``proof`` is null): ask for the proofs of the devices
    to check on chain, in a single query or a bulk query of just those. With ``"layout":
    "batches"`` each batch's fields and proof nodes come once (see ``DeviceQueryIn.layout``): the
    same answers, in a fraction of the bytes when many devices share batches."""
    answer = await query_answer(resolver, body.devices, proofs=body.proofs, layout=body.layout)
    return Response(answer, media_type="application/json")


@query_router.get(
    "/{scheme}/{device_id:path}",
    summary="One device's licence",
    response_model=DeviceAnswer,
    responses=_ANSWER_DOC,
)
@served_lean_by(_lean_device)
async def get_device(scheme: str, device_id: str, request: Request, resolver: ResolverDep) -> Response:
    """Status (licensed, revoked, suspended, unknown), manufacturer, batch, BPC per device and
    the Merkle proof with root, registry, chain id and block, to check on chain."""
    try:
        device = parse_device_id(scheme, device_id)
    except DomainError as error:
        return _refusal(request, error)
    return _device_response(request, await device_answer(resolver, device))


def _refusal(request: Request, error: DomainError) -> Response:
    """A browser's page for a refused device id; anyone else gets the problem document."""
    if not wants_html(request.headers.get("accept")):
        raise error
    page = refusal_page(error.title, error.detail)
    return Response(
        page, status_code=error.status, media_type="text/html; charset=utf-8", headers={"Vary": "Accept"}
    )


async def _digital_link(request: Request, resolver: Resolver) -> Response:
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    try:
        device = parse_digital_link(str(request.base_url).rstrip("/") + raw_path.decode("latin-1"))
    except DomainError as error:
        return _refusal(request, error)
    return _device_response(request, await device_answer(resolver, device))


@link_router.get("/01/{rest:path}", summary="Resolve a GS1 Digital Link", responses=_ANSWER_DOC)
async def get_gs1_link(rest: str, request: Request, resolver: ResolverDep) -> Response:
    """``/01/{gtin}/21/{serial}`` (with optional ``/22/…`` and ``/10/…`` qualifiers)."""
    return await _digital_link(request, resolver)


@link_router.get("/imei/{imei}", summary="Resolve an IMEI link", responses=_ANSWER_DOC)
async def get_imei_link(imei: str, request: Request, resolver: ResolverDep) -> Response:
    return await _digital_link(request, resolver)


@link_router.get(
    "/serial/{namespace}/{serial}", summary="Resolve a manufacturer serial link", responses=_ANSWER_DOC
)
async def get_serial_link(namespace: str, serial: str, request: Request, resolver: ResolverDep) -> Response:
    return await _digital_link(request, resolver)


router = APIRouter(prefix="/v1/devices")
router.include_router(query_router)
