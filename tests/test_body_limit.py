"""Request bodies over their route's limit are refused with a 413 problem before they are read."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, FastAPI, Request

from exchange.api.app import create_app
from exchange.api.body_limit import limit_bodies
from exchange.licenses.resolver_routes import QUERY_BODY_MAX_BYTES
from exchange.settings import Settings

LIMIT = 2048
router = APIRouter()
bodies_read: list[int] = []


@router.post("/echo")
@router.post("/big")
async def echo(request: Request) -> dict[str, int]:
    body = await request.body()
    bodies_read.append(len(body))
    return {"length": len(body)}


def _app(settings: Settings) -> FastAPI:
    app = create_app(settings, routers=[router])
    limit_bodies(app, LIMIT, {"/big": 4 * LIMIT})
    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def _chunks(total: int, size: int = 512) -> AsyncIterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


def _assert_too_large(reply: httpx.Response, limit: int) -> None:
    assert reply.status_code == 413, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    body = reply.json()
    assert body["type"].endswith("/body-too-large")
    assert body["limit_bytes"] == limit
    # One request id, in the body and (once) in the headers, as on every answer.
    assert reply.headers.get_list("x-request-id") == [body["request_id"]]


async def test_bodies_up_to_the_limit_pass_and_larger_ones_are_refused(settings: Settings) -> None:
    bodies_read.clear()
    async with _client(_app(settings)) as client:
        assert (await client.post("/echo", content=b"x" * LIMIT)).json() == {"length": LIMIT}
        _assert_too_large(await client.post("/echo", content=b"x" * (LIMIT + 1)), LIMIT)
        # No Content-Length: the body is counted as it arrives.
        assert (await client.post("/echo", content=_chunks(LIMIT))).json() == {"length": LIMIT}
        _assert_too_large(await client.post("/echo", content=_chunks(LIMIT + 1)), LIMIT)
        # A path with a limit of its own.
        assert (await client.post("/big", content=b"x" * (3 * LIMIT))).json() == {"length": 3 * LIMIT}
        _assert_too_large(await client.post("/big", content=_chunks(4 * LIMIT + 1)), 4 * LIMIT)
    assert bodies_read == [LIMIT, LIMIT, 3 * LIMIT]  # no refused body reached the route


async def test_the_service_refuses_large_bodies_except_where_it_needs_them(
    service: httpx.AsyncClient, settings: Settings
) -> None:
    default = settings.request_body_max_bytes
    order = await service.post(
        "/v1/orders", content=b" " * (default + 1), headers={"Content-Type": "application/json"}
    )
    _assert_too_large(order, default)
    streamed = await service.post(
        "/v1/orders", content=_chunks(default + 1, 65536), headers={"Content-Type": "application/json"}
    )
    _assert_too_large(streamed, default)
    # A bulk device query may be larger than the default: it is read, and refused for what it says.
    padded = b'{"devices": ["imei:1"]' + b" " * (default + 1) + b"}"
    assert len(padded) < QUERY_BODY_MAX_BYTES
    query = await service.post(
        "/v1/devices/query", content=padded, headers={"Content-Type": "application/json"}
    )
    assert query.status_code == 422, query.text
    assert len(query.headers.get_list("x-request-id")) == 1
    # Streamed to routes whose bodies FastAPI parses (it would answer a read error with a 400).
    for path in ("/v1/orders/batch", "/v1/auth/login"):
        chunked = await service.post(
            path, content=_chunks(default + 1, 65536), headers={"Content-Type": "application/json"}
        )
        _assert_too_large(chunked, default)
