"""The resolver's lean path against FastAPI's handling of the same routes, bulk answers without
proofs, and the resolver-only app served by `exchange licence resolver` in several processes.

A request the lean path is not made for (a query string, another content type) goes to FastAPI's
handling of the declared endpoint, the path the lean one replaced: the tests send each request
both ways through the same app and compare the bytes.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from sqlalchemy.engine import make_url
from starlette.types import Receive, Scope, Send

from exchange.api.body_limit import BodyLimit
from exchange.api.request_context import RequestIdMiddleware
from exchange.licenses.repository import AsyncpgReads, Registry
from exchange.licenses.resolver_app import create_resolver_app
from exchange.licenses.resolver_routes import LeanFront, LeanRoute, _write_chunks, query_router
from exchange.settings import Settings
from tests.licenses_service.conftest import Service
from tests.licenses_service.test_device_batches import on_chain_status, registered_batch

REGISTERED = [f"serial:com.example:P-{n}" for n in range(12)]
UNKNOWN = ["serial:com.example:never-made", "imei:490154203237518"]


def without_request_id(reply: httpx.Response) -> dict[str, Any]:
    document: dict[str, Any] = reply.json()
    assert document.pop("request_id") == reply.headers["x-request-id"]
    return document


async def both_ways_get(service: Service, path: str) -> tuple[httpx.Response, httpx.Response]:
    lean = await service.client.get(path, headers={"Accept": "application/json"})
    standard = await service.client.get(
        path, params={"via": "fastapi"}, headers={"Accept": "application/json"}
    )
    return lean, standard


async def both_ways_post(service: Service, body: bytes) -> tuple[httpx.Response, httpx.Response]:
    lean = await service.client.post(
        "/v1/devices/query", content=body, headers={"Content-Type": "application/json"}
    )
    standard = await service.client.post(
        "/v1/devices/query", content=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    return lean, standard


def test_the_query_routes_are_lean_and_documented(licensing: Service) -> None:
    lean = {
        (route.path, method)
        for route in query_router.routes
        if isinstance(route, LeanRoute) and route.lean is not None
        for method in route.methods
    }
    assert lean == {("/query", "POST"), ("/{scheme}/{device_id:path}", "GET")}
    schema = licensing.app.openapi()
    assert "post" in schema["paths"]["/v1/devices/query"]
    assert "get" in schema["paths"]["/v1/devices/{scheme}/{device_id}"]
    query_in = schema["components"]["schemas"]["DeviceQueryIn"]["properties"]
    assert query_in["proofs"]["default"] is True
    assert query_in["layout"]["default"] == "devices"
    answer = schema["paths"]["/v1/devices/query"]["post"]["responses"]["200"]["content"]["application/json"]
    assert {variant["$ref"].rsplit("/", 1)[1] for variant in answer["schema"]["anyOf"]} == {
        "DeviceQueryOut",
        "DeviceQueryBatchedOut",
    }


async def test_lean_answers_are_the_bytes_fastapi_sends(licensing: Service) -> None:
    batch, _ = await registered_batch(licensing, REGISTERED)
    licensing.pool.devices.transact("revokeDevices", batch["batch_id"], [3])
    await licensing.catch_up()
    for device_id in [REGISTERED[0], REGISTERED[3], *UNKNOWN]:
        scheme, _, _ = device_id.partition(":")
        lean, standard = await both_ways_get(licensing, f"/v1/devices/{scheme}/{device_id}")
        assert lean.status_code == standard.status_code == 200
        assert lean.content == standard.content
        for header in ("content-type", "content-length", "vary"):
            assert lean.headers[header] == standard.headers[header]
    for body in (
        b'{"devices": ["%s", "%s", "%s"]}'
        % (REGISTERED[1].encode(), UNKNOWN[0].encode(), REGISTERED[1].encode()),
        b'{"devices": ["%s", "%s"], "proofs": false}' % (REGISTERED[3].encode(), REGISTERED[4].encode()),
        b'{"proofs": true, "devices": []}',
        b'{"devices": ["%s", "%s", "%s"], "layout": "batches"}'
        % (REGISTERED[3].encode(), UNKNOWN[1].encode(), REGISTERED[6].encode()),
        b'{"devices": ["%s"], "layout": "batches", "proofs": false}' % REGISTERED[2].encode(),
        b'{"devices": [], "layout": "batches"}',
        b'{"devices": ["%s"], "layout": "devices"}' % REGISTERED[2].encode(),
        # Another spelling of a registered device (a Digital Link) is parsed, then looked up.
        b'{"devices": ["http://id.example.org/serial/com.example/P-5", "%s"]}' % REGISTERED[5].encode(),
    ):
        lean, standard = await both_ways_post(licensing, body)
        assert lean.status_code == standard.status_code == 200, lean.text
        assert lean.content == standard.content
        assert lean.headers["content-type"] == standard.headers["content-type"] == "application/json"
    linked = (await both_ways_post(licensing, body))[0].json()["devices"]
    assert linked[0] == linked[1]
    assert linked[0]["status"] == "licensed"


async def test_lean_refusals_are_the_problems_fastapi_sends(licensing: Service) -> None:
    await registered_batch(licensing, REGISTERED[:2])
    for path in ("/v1/devices/imei/352099001761482", "/v1/devices/gs1/nonsense", "/v1/devices/tcp/1"):
        lean, standard = await both_ways_get(licensing, path)
        assert lean.status_code == standard.status_code == 422
        assert lean.headers["content-type"] == standard.headers["content-type"] == "application/problem+json"
        assert without_request_id(lean) == without_request_id(standard)
    refused = {
        b'{"devices": ["imei:352099001761481", "gs1:nonsense", "%s", "imei:1"]}'
        % REGISTERED[0].encode(): 422,
        b'{"devices": ["imei:352099001761481"' + b', "imei:352099001761481"' * 10_000 + b"]}": 413,
        b'{"devices": "imei:352099001761481"}': 422,
        b'{"devices": ["imei:352099001761481"], "proofs": "sometimes"}': 422,
        b'{"devices": ["imei:352099001761481"], "layout": "by-batch"}': 422,
        b'{"devices": ["%s\\n%s", "serial:acme:\\u0000"]}'
        % (REGISTERED[0].encode(), REGISTERED[1].encode()): 422,
        b'{"devices": ["imei:352099001761481"], "layout": null}': 422,
        b'{"devices": ["imei:352099001761482"], "layout": "batches"}': 422,
        b'{"devices": ["imei:352099001761481"], "limit": 3}': 422,
        b'{"devices": [1]}': 422,
        b"[]": 422,
        b'{"devices": [': 422,
        b"": 422,
    }
    for body, status in refused.items():
        lean, standard = await both_ways_post(licensing, body)
        assert lean.status_code == standard.status_code == status, (body[:80], lean.text)
        assert lean.headers["content-type"] == "application/problem+json"
        assert without_request_id(lean) == without_request_id(standard), body[:80]
    # Refusals of the bulk list name the entries by their place in the list the client sent.
    invalid = (await both_ways_post(licensing, next(iter(refused))))[0].json()
    assert [entry["item"] for entry in invalid["errors"]] == [1, 3]


async def test_bulk_without_proofs_agrees_with_single_queries(licensing: Service) -> None:
    batch, _ = await registered_batch(licensing, REGISTERED)
    licensing.pool.devices.transact("revokeDevices", batch["batch_id"], [2, 9])
    await licensing.catch_up()
    asked = [*REGISTERED, *UNKNOWN, REGISTERED[0]]
    reply = await licensing.client.post("/v1/devices/query", json={"devices": asked, "proofs": False})
    assert reply.status_code == 200, reply.text
    answers = reply.json()["devices"]
    assert [answer["device_id"] for answer in answers] == asked
    for answer in answers:
        assert answer["proof"] is None
        scheme, _, _ = answer["device_id"].partition(":")
        single = (await licensing.client.get(f"/v1/devices/{scheme}/{answer['device_id']}")).json()
        assert {**answer, "proof": single["proof"]} == single
        if single["status"] != "unknown":
            # The single answer's proof is what a verifier asks for next; the chain accepts it.
            assert on_chain_status(licensing, single) == {"licensed": 0, "revoked": 5}[single["status"]]
    assert [answer["status"] for answer in answers].count("revoked") == 2


@asynccontextmanager
async def resolver_only(settings: Settings, routed: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    """The resolver-only app in this process, on the test's database; `routed` collects the
    paths of the requests that reached the app's routing (not answered ahead of it)."""
    app = create_resolver_app(settings)
    # Outermost: a request id and the body limit, then the lean path ahead of routing.
    assert [entry.cls for entry in app.user_middleware[:3]] == [RequestIdMiddleware, BodyLimit, LeanFront]
    routing = app.router.middleware_stack

    async def noting(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            routed.append(scope["path"])
        await routing(scope, receive, send)

    app.router.middleware_stack = noting
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield client


async def test_the_resolver_app_answers_ahead_of_routing_as_the_service_does(
    licensing: Service, settings: Settings
) -> None:
    batch, _ = await registered_batch(licensing, REGISTERED)
    licensing.pool.devices.transact("revokeDevices", batch["batch_id"], [3])
    await licensing.catch_up()
    service = licensing.client
    json_accept = {"Accept": "application/json"}
    routed: list[str] = []
    async with resolver_only(settings, routed) as front:
        for device_id in [REGISTERED[0], REGISTERED[3], *UNKNOWN]:
            scheme, _, _ = device_id.partition(":")
            path = f"/v1/devices/{scheme}/{device_id}"
            ours, theirs = (
                await front.get(path, headers=json_accept),
                await service.get(path, headers=json_accept),
            )
            assert ours.status_code == theirs.status_code == 200
            assert ours.content == theirs.content
            for header in ("content-type", "content-length", "vary"):
                assert ours.headers[header] == theirs.headers[header]
            assert re.fullmatch(r"[0-9a-f]{32}", ours.headers["x-request-id"])
        # A request id the caller sends is the request's.
        tagged = await front.get(f"/v1/devices/serial/{REGISTERED[0]}", headers={"X-Request-ID": "scan-42"})
        assert tagged.headers.get_list("x-request-id") == ["scan-42"]
        for body in (
            b'{"devices": ["%s", "%s", "%s"]}'
            % (REGISTERED[1].encode(), UNKNOWN[0].encode(), REGISTERED[1].encode()),
            b'{"devices": ["%s", "%s"], "proofs": false}' % (REGISTERED[3].encode(), REGISTERED[4].encode()),
            b'{"devices": ["http://id.example.org/serial/com.example/P-5", "%s"]}' % REGISTERED[5].encode(),
            # Not for the lean handler (another content type): FastAPI's handling, same answer.
            b'{"devices": ["%s"]}' % REGISTERED[6].encode(),
        ):
            content_type = "application/json; charset=utf-8" if b"P-6" in body else "application/json"
            ours, theirs = [
                await client.post("/v1/devices/query", content=body, headers={"Content-Type": content_type})
                for client in (front, service)
            ]
            assert ours.status_code == theirs.status_code == 200, ours.text
            assert ours.content == theirs.content
            assert len(ours.headers.get_list("x-request-id")) == 1
        # Only the body in another content type went through the routing.
        assert routed == ["/v1/devices/query"]
        routed.clear()
        # Refusals: the app's problem documents, with the request id of the answer.
        for path in ("/v1/devices/imei/352099001761482", "/v1/devices/tcp/1", "/v1/devices/serial/"):
            ours, theirs = await front.get(path), await service.get(path)
            assert ours.status_code == theirs.status_code == 422
            assert ours.headers["content-type"] == "application/problem+json"
            assert len(ours.headers.get_list("x-request-id")) == 1
            assert without_request_id(ours) == without_request_id(theirs)
        for body, status in (
            (b'{"devices": ["imei:352099001761481", "gs1:nonsense", "imei:1"]}', 422),
            (b'{"devices": ["imei:352099001761481"' + b', "imei:352099001761481"' * 10_000 + b"]}", 413),
            (b'{"devices": ["imei:352099001761481"], "limit": 3}', 422),
            (b'{"devices": [', 422),
            (b"", 422),
        ):
            ours, theirs = [
                await client.post(
                    "/v1/devices/query", content=body, headers={"Content-Type": "application/json"}
                )
                for client in (front, service)
            ]
            assert ours.status_code == theirs.status_code == status, (body[:80], ours.text)
            assert len(ours.headers.get_list("x-request-id")) == 1
            assert without_request_id(ours) == without_request_id(theirs)
        # Answered ahead of routing, but for the malformed bodies.
        assert routed == ["/v1/devices/query"] * 3
        routed.clear()
        # What the lean handler does not take goes on to the app: a page for browsers, a query
        # string, and paths the route's pattern does not match (a line feed ends its match).
        device = f"/v1/devices/serial/{REGISTERED[0]}"
        page = await front.get(device, headers={"Accept": "text/html"})
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "<h1>Licensed</h1>" in page.text
        queried = await front.get(device, params={"via": "fastapi"})
        assert queried.content == (await front.get(device)).content  # the second one answered ahead
        assert (await front.get("/v1/devices/query")).status_code == 405
        assert (await front.get("/v1/devices/imei/35209900%0A1761481")).status_code == 404
        assert routed == [device, device, "/v1/devices/query", "/v1/devices/imei/35209900\n1761481"]


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_single_lookups_asked_together_share_a_statement(
    licensing: Service, settings: Settings
) -> None:
    batch, _ = await registered_batch(licensing, REGISTERED)
    licensing.pool.devices.transact("revokeDevices", batch["batch_id"], [2])
    await licensing.catch_up()
    registry = licensing.licensing.resolver.registry
    statements: list[str] = []  # the lookups the database was sent

    def note(logged: Any) -> None:
        if "licence_indexer_cursors" in logged.query:
            statements.append(logged.query)

    async def noting(connection: asyncpg.Connection) -> None:
        connection.add_query_logger(note)

    url = make_url(settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4, init=noting)
    try:
        reads = AsyncpgReads(pool)
        asked = [*REGISTERED, *UNKNOWN, REGISTERED[0]]
        alone = [await reads.lookup(registry, [device_id]) for device_id in asked]
        assert len(statements) == len(asked)
        block, rows = await reads.lookup(registry, asked)
        assert block is not None
        assert rows[REGISTERED[2]].revoked_block is not None
        assert alone == [(block, {d: rows[d]} if d in rows else {}) for d in asked]
        statements.clear()
        together = await asyncio.gather(*(reads.lookup(registry, [device_id]) for device_id in asked))
        assert together == alone
        assert len(statements) == 1
        # A lookup given up (its request gone) is left out; the others are answered.
        waiting = [asyncio.create_task(reads.lookup(registry, [device_id])) for device_id in asked[:3]]
        await asyncio.sleep(0)
        waiting[1].cancel()
        answered = await asyncio.gather(*waiting, return_exceptions=True)
        assert isinstance(answered[1], asyncio.CancelledError)
        assert [answered[0], answered[2]] == [alone[0], alone[2]]
        # A statement that fails fails the lookups it was for, and only those.
        unusable = Registry(2**63, registry.address)  # beyond bigint
        failed, fine = await asyncio.gather(
            reads.lookup(unusable, [REGISTERED[0]]),
            reads.lookup(registry, [REGISTERED[0]]),
            return_exceptions=True,
        )
        assert isinstance(failed, asyncpg.DataError)
        assert fine == alone[0]
        # Strings no id can be (a line break, a NUL) are found nowhere, whatever else is asked.
        odd = [f"{REGISTERED[3]}\n{REGISTERED[4]}", "serial:com.example:P-\x005", "\n", ""]
        assert await reads.lookup(registry, odd) == (block, {})
        assert await reads.lookup(registry, [*odd, REGISTERED[5]]) == (
            block,
            {REGISTERED[5]: rows[REGISTERED[5]]},
        )
        assert await reads.lookup(registry, [odd[1]]) == (block, {})
    finally:
        await pool.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def resolver_processes(settings: Settings, tmp_path: Path) -> Any:
    """A function starting `exchange licence resolver --workers 2` on the test's database."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> tuple[subprocess.Popen[bytes], str]:
        port = _free_port()
        with (tmp_path / f"resolver-{port}.log").open("wb") as log:
            process = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("exchange")),
                    "licence",
                    "resolver",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "2",
                    *extra,
                ],
                env={**os.environ, "DATABASE_URL": settings.database_url, "EXCHANGE_LOG_FORMAT": "json"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(process)
        return process, f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def _resolver_log(directory: Path) -> str:
    return next(directory.glob("resolver-*.log")).read_text()


def _wait_until_serving(process: subprocess.Popen[bytes], base: str) -> None:
    # Two worker processes each import the service and read the chain before they serve: on a
    # machine busy with other test processes that took more than a minute.
    deadline = time.monotonic() + 180
    while True:
        try:
            httpx.get(f"{base}/health", timeout=2)
            return
        except httpx.TransportError:
            pass
        assert process.poll() is None, "the resolver exited"
        assert time.monotonic() < deadline, "the resolver did not start"
        time.sleep(0.2)


async def test_resolver_processes_answer_as_the_service_does(
    licensing: Service, resolver_processes: Any, tmp_path: Path
) -> None:
    batch, _ = await registered_batch(licensing, REGISTERED)
    licensing.pool.devices.transact("revokeDevices", batch["batch_id"], [4])
    await licensing.catch_up()
    process, base = resolver_processes()
    _wait_until_serving(process, base)
    asked = [*REGISTERED, *UNKNOWN]
    async with httpx.AsyncClient(base_url=base, timeout=30) as remote:
        for proofs in (True, False):
            body = {"devices": asked, "proofs": proofs}
            theirs = await remote.post("/v1/devices/query", json=body)
            ours = await licensing.client.post("/v1/devices/query", json=body)
            assert theirs.status_code == 200, theirs.text
            assert theirs.content == ours.content
        for device_id in asked:
            scheme, _, _ = device_id.partition(":")
            reply = await remote.get(f"/v1/devices/{scheme}/{device_id}")
            assert reply.content == (await licensing.client.get(f"/v1/devices/{scheme}/{device_id}")).content
        # One app, one error handler: the same problem documents as the service.
        refused = await remote.get("/v1/devices/imei/352099001761482")
        assert refused.status_code == 422
        assert without_request_id(refused) == without_request_id(
            await licensing.client.get("/v1/devices/imei/352099001761482")
        )
        # Read-only: no route of the service's writers, and no indexer (a revocation shows only
        # once the service's indexer has applied it).
        assert (await remote.post("/v1/auth/nonce")).status_code == 404
        licensing.pool.devices.transact("revokeDevices", batch["batch_id"], [5])
        stale = (await remote.get(f"/v1/devices/serial/{REGISTERED[5]}")).json()
        assert stale["status"] == "licensed"
        await licensing.catch_up()
        fresh = (await remote.get(f"/v1/devices/serial/{REGISTERED[5]}")).json()
        assert fresh["status"] == "revoked"
        assert fresh["block"] > stale["block"]
        schema = (await remote.get("/openapi.json")).json()
        assert {"/v1/devices/query", "/v1/devices/{scheme}/{device_id}"} <= set(schema["paths"])
        assert not {"/v1/devices/batches", "/v1/auth/nonce"} & set(schema["paths"])
    # Served without an access log, as the command asks the server (the app's own logs remain),
    # by workers that froze their start-up heap.
    log = _resolver_log(tmp_path)
    assert '"licence.resolver_started"' in log
    assert '"app.start_heap_frozen"' in log
    assert "uvicorn.access" not in log


def test_resolver_refuses_to_start_without_a_registry(
    settings: Settings, resolver_processes: Any, tmp_path: Path
) -> None:
    process, _ = resolver_processes()
    assert process.wait(timeout=60) == 2
    assert "no indexed registry" in _resolver_log(tmp_path)


@pytest.mark.parametrize("count", [0, 1, 49, 50, 51, 120])
async def test_lists_written_in_chunks_are_the_bytes_of_the_whole_list(count: int) -> None:
    items = [
        {"batch_id": n, "levels": [{"indices": [n, n + 1], "nodes": "0x" + "ab" * 64}]} for n in range(count)
    ]
    parts: list[bytes | memoryview] = [b"["]
    await _write_chunks(parts, items, 50)
    parts.append(b"]")
    assert b"".join(parts) == orjson.dumps(items)
