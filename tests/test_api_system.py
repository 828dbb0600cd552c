"""The app factory's lifespan and the system routes, through the ASGI interface with the lifespan run."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import inspect

from exchange.api import system_routes
from exchange.api.app import YOUNG_COLLECTION_AT, LifespanHook, create_app, freeze_start_heap
from exchange.api.system_routes import register_health_check, service_version
from exchange.db.engine import create_engine_for_url
from exchange.db.session import app_engine
from exchange.main import build_app
from exchange.settings import Settings
from tests.conftest import StartApp


async def test_health_reports_a_reachable_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["version"] == service_version()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["database"]["latency_ms"] >= 0


async def test_health_is_503_when_the_database_is_unreachable(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    healthy_engine = app.state.db_engine
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    app.state.db_engine = create_engine_for_url("postgresql://nobody@127.0.0.1:1/none")
    try:
        response = await client.get("/health")
    finally:
        await app.state.db_engine.dispose()
        app.state.db_engine = healthy_engine
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is False


async def test_health_includes_registered_checks(start_app: StartApp) -> None:
    async def chain_down() -> None:
        raise ConnectionError("node at 127.0.0.1:8545 refused")

    async def registering_hook(app: FastAPI) -> None:
        register_health_check(app, "chain", chain_down)

    running = await start_app(lifespan_hooks=[registering_hook])
    response = await running.client.get("/health")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] is True
    assert checks["chain"]["ok"] is False
    # The failure's text stays in the log: it may name hosts.
    assert "refused" not in response.text


async def test_health_checks_run_once_per_interval_however_many_ask(
    start_app: StartApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[float] = []
    now = [1000.0]
    REUSE_S = getattr(system_routes, "HEALTH_REUSE_SECONDS", 1.0)
    monkeypatch.setattr(system_routes, "monotonic", lambda: now[0], raising=False)

    async def slow_chain() -> None:
        runs.append(now[0])
        await asyncio.sleep(0.05)

    async def registering_hook(app: FastAPI) -> None:
        register_health_check(app, "chain", slow_chain)

    running = await start_app(lifespan_hooks=[registering_hook])
    replies = await asyncio.gather(*(running.client.get("/health") for _ in range(20)))
    assert {reply.status_code for reply in replies} == {200}
    assert len({reply.text for reply in replies}) == 1  # one run's answer, latencies included
    now[0] += REUSE_S / 2
    assert (await running.client.get("/health")).status_code == 200
    assert runs == [1000.0]
    now[0] += REUSE_S
    assert (await running.client.get("/health")).status_code == 200
    assert len(runs) == 2


@pytest.mark.parametrize("name", ["database", "chain"])
async def test_a_health_check_name_is_registered_once(start_app: StartApp, name: str) -> None:
    async def fine() -> None:
        return None

    running = await start_app()
    if name != "database":
        register_health_check(running.app, name, fine)
    with pytest.raises(ValueError, match="already registered"):
        register_health_check(running.app, name, fine)


async def test_time_is_the_server_clock_in_milliseconds(client: httpx.AsyncClient) -> None:
    before_ms = time.time_ns() // 1_000_000
    response = await client.get("/v1/time")
    after_ms = time.time_ns() // 1_000_000
    assert response.status_code == 200
    server_time_ms = response.json()["server_time_ms"]
    assert isinstance(server_time_ms, int)
    assert before_ms <= server_time_ms <= after_ms


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/v1/time")
    second = await client.get("/v1/time")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_openapi_names_the_service(client: httpx.AsyncClient) -> None:
    info = (await client.get("/openapi.json")).json()["info"]
    assert info["title"] == "Patent-pool token exchange"
    assert info["version"] == service_version()


async def test_lifespan_migrates_an_empty_database_on_start(
    empty_database_url: str, start_app: StartApp
) -> None:
    running = await start_app(settings=Settings(database_url=empty_database_url))
    async with app_engine(running.app).connect() as connection:
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert {"alembic_version", "chain_deployments"} <= tables


async def test_without_migrate_on_start_the_schema_is_left_alone(
    empty_database_url: str, start_app: StartApp
) -> None:
    running = await start_app(settings=Settings(database_url=empty_database_url, migrate_on_start=False))
    async with app_engine(running.app).connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    assert tables == []


async def test_hooks_start_in_order_and_stop_in_reverse(settings: Settings) -> None:
    calls: list[str] = []

    async def plain_hook(app: FastAPI) -> None:
        assert app.state.db_sessionmaker is not None  # the database is ready before any hook
        calls.append("plain started")

    def context_hook(name: str) -> LifespanHook:
        @asynccontextmanager
        async def hook(app: FastAPI) -> AsyncIterator[None]:
            calls.append(f"{name} started")
            setattr(app.state, name, True)
            yield
            calls.append(f"{name} stopped")

        return hook

    app = create_app(settings, lifespan_hooks=[context_hook("first"), plain_hook, context_hook("second")])
    async with app.router.lifespan_context(app):
        assert app.state.first
        assert app.state.second
        calls.append("serving")
    assert calls == [
        "first started",
        "plain started",
        "second started",
        "serving",
        "second stopped",
        "first stopped",
    ]


async def test_a_failing_hook_aborts_start_up_and_unwinds_the_others(settings: Settings) -> None:
    calls: list[str] = []

    @asynccontextmanager
    async def chain(app: FastAPI) -> AsyncIterator[None]:
        calls.append("chain started")
        try:
            yield
        finally:
            calls.append("chain stopped")

    async def broken(app: FastAPI) -> None:
        raise RuntimeError("cannot reach the indexer")

    app = create_app(settings, lifespan_hooks=[chain, broken])
    with pytest.raises(RuntimeError, match="indexer"):
        async with app.router.lifespan_context(app):
            pytest.fail("the app must not serve after a hook failed")
    assert calls == ["chain started", "chain stopped"]


def test_apps_do_not_share_state(settings: Settings, sqlite_database_url: str) -> None:
    first = create_app(settings)
    second = create_app(Settings(database_url=sqlite_database_url))
    assert first.state.settings is settings
    assert second.state.settings is not settings
    assert first.state.health_checks is not second.state.health_checks


async def test_the_served_app_freezes_its_start_up_heap(start_app: StartApp) -> None:
    """The last start-up hook of ``exchange serve`` takes what start-up allocated out of the
    collector's full collections (long pauses of the event loop otherwise), and has the
    youngest generation collected less often."""
    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    assert thresholds[0] < YOUNG_COLLECTION_AT
    try:
        await start_app(lifespan_hooks=[freeze_start_heap])
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold() == (YOUNG_COLLECTION_AT, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert gc.get_freeze_count() == 0


def test_every_request_body_model_refuses_fields_it_does_not_name() -> None:
    """A field a body does not name is a 422 ``extra_forbidden``, never dropped: the schema of every
    JSON body given by a model says ``additionalProperties: false``."""
    schema = build_app(Settings()).openapi()
    models: set[str] = set()

    def collect(node: object) -> None:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str):
                name = reference.rsplit("/", 1)[-1]
                if name not in models:
                    models.add(name)
                    collect(schema["components"]["schemas"][name])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    for operations in schema["paths"].values():
        for operation in operations.values():
            collect(operation.get("requestBody", {}).get("content", {}).get("application/json", {}))
    assert {"PatentIn", "RunIn", "ApplicationIn", "LoginIn", "PlaceOrderIn", "AcquireIn"} <= models
    lax = sorted(
        name
        for name in models
        if schema["components"]["schemas"][name].get("type") == "object"
        and schema["components"]["schemas"][name].get("additionalProperties") is not False
    )
    assert lax == []
