"""The app factory: one FastAPI app per ``Settings``, no process-global state.

``create_app(settings, routers=..., lifespan_hooks=...)`` returns an app holding
its settings (``app.state.settings``), the per-IP rate limit of the sign-in
routes (``app.state.sign_in_limits``) and that of the public routes that read the
chain (``app.state.chain_read_limits``), whose lifespan, in order:

1. applies pending migrations (unless ``settings.migrate_on_start`` is false);
2. creates the database engine and session factory, stored as
   ``app.state.db_engine`` and ``app.state.db_sessionmaker``;
3. runs each lifespan hook in the order given. A hook is called with the app
   and returns either an awaitable (start-up only) or an async context manager
   (start-up on enter, shutdown on exit, in reverse order). Hooks keep what
   they build on ``app.state`` and may call ``register_health_check``.

On shutdown the hooks' context managers exit, then the engine is disposed.
A hook that raises aborts start-up: the server refuses to start, and whatever
was started before it is shut down.
"""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from sqlalchemy.engine import make_url

from exchange.api.metrics import MetricSource
from exchange.api.metrics import router as metrics_router
from exchange.api.problems import document_problems, install_problem_handlers
from exchange.api.request_context import RequestIdMiddleware
from exchange.api.system_routes import HealthCheck, service_version
from exchange.api.system_routes import router as system_router
from exchange.db.engine import create_db_engine, create_sessionmaker
from exchange.db.migrate import upgrade_to_head_async
from exchange.kit.logging import get_logger
from exchange.kit.ratelimit import RateLimiter
from exchange.settings import Settings

log = get_logger(__name__)

LifespanHook = Callable[[FastAPI], Awaitable[None] | AbstractAsyncContextManager[object]]


class ExchangeAPI(FastAPI):
    """FastAPI whose OpenAPI document describes the problem+json error responses."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = document_problems(super().openapi())
        return self.openapi_schema


def _lifespan(
    hooks: Sequence[LifespanHook],
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings: Settings = app.state.settings
        database = make_url(settings.database_url).render_as_string(hide_password=True)
        if settings.migrate_on_start:
            await upgrade_to_head_async(settings.database_url)
        async with AsyncExitStack() as stack:
            engine = create_db_engine(settings)
            stack.push_async_callback(engine.dispose)
            app.state.db_engine = engine
            app.state.db_sessionmaker = create_sessionmaker(engine)
            for hook in hooks:
                started = hook(app)
                if isinstance(started, AbstractAsyncContextManager):
                    await stack.enter_async_context(started)
                else:
                    await started
            log.info("app.started", database=database, embedded_chain=settings.uses_embedded_chain)
            yield
            log.info("app.stopping")

    return lifespan


async def freeze_start_heap(app: FastAPI) -> None:
    """Lifespan hook, last: move everything the start-up allocated out of the collector's sight.

    The service starts with millions of long-lived objects (web3, py-evm and the embedded
    chain, contract ABIs, pydantic models). Each full collection of the cyclic garbage
    collector walks all of them: about 200 ms during which the event loop answers nothing,
    every few seconds under load, which was most of the order path's tail latency.
    ``gc.freeze()`` moves them to a permanent generation that collections skip; what the
    service allocates afterwards (orders, sessions, requests) is collected as before.
    For long-running processes only: a process that starts many apps (a test run) would
    keep the cyclic garbage of each frozen.

    Then the youngest generation is collected after 10,000 new objects rather than 700
    (``YOUNG_COLLECTION_AT``). Under order load the default collected it a few hundred times
    a second, and about every hundredth collection was a full one over what the service
    keeps (resting orders, caches): 5 ms on average, up to 8, with the event loop stopped.
    Serving a benchmark run of 30,000 orders, that came to about 2,700 young, 250 middle and
    21 full collections, 380 ms in all; with 10,000, to 7 young ones of 1.5 ms and no others.
    What it collects is the requests' own garbage, most of it freed by reference counts anyway.
    The licence resolver's processes (``exchange licence resolver``) start the same way: their
    bulk answers make many objects at once, which the default collected several times over.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_AT, *gc.get_threshold()[1:])
    log.info("app.start_heap_frozen", objects=gc.get_freeze_count())


YOUNG_COLLECTION_AT = 10_000  # new objects, less freed ones, before the youngest generation is collected


# py-evm needs 12 * 1024 Python frames (1024 nested EVM calls) and sets that limit when imported;
# py_ecc, imported with it, raises the limit to 100,000, deep enough that parsing a request body of
# ~100,000 nested brackets overflows the C stack and kills the process instead of raising
# RecursionError (which the JSON routes answer with a 400 problem).
EVM_RECURSION_LIMIT = 12 * 1024


def bound_recursion() -> None:
    """Import the libraries that raise the recursion limit, then set it back to what py-evm needs."""
    for module in ("py_ecc", "eth"):
        importlib.import_module(module)
    sys.setrecursionlimit(EVM_RECURSION_LIMIT)


def create_app(
    settings: Settings,
    *,
    routers: Sequence[APIRouter] = (),
    lifespan_hooks: Sequence[LifespanHook] = (),
) -> FastAPI:
    """Build the service's app: system routes plus ``routers``, errors as problem+json."""
    bound_recursion()
    app = ExchangeAPI(
        title="Patent-pool token exchange",
        version=service_version(),
        summary="BPC trading, threshold and per-device licensing, pool administration.",
        lifespan=_lifespan(tuple(lifespan_hooks)),
        telemetry={
            "tracing": settings.otel_telemetry,
            "metrics": settings.otel_telemetry,
            "logs": settings.otel_telemetry,
        },
    )
    app.state.settings = settings
    app.state.health_checks = dict[str, HealthCheck]()
    app.state.metric_sources = dict[str, MetricSource]()
    # The per-IP limit of the sign-in routes (exchange.auth), for any app that mounts them.
    app.state.sign_in_limits = RateLimiter(settings.auth_rate_ip_per_s, settings.auth_rate_ip_burst)
    # The per-IP limit of the public routes that read the chain on each request
    # (exchange.api.dependencies.limit_chain_reads).
    app.state.chain_read_limits = RateLimiter(
        settings.chain_read_rate_ip_per_s, settings.chain_read_rate_ip_burst
    )
    install_problem_handlers(app)
    # Added last, so outermost of what create_app adds: the request id is bound before anything
    # else runs or logs (a front or body limit added later binds it ahead, and this one passes).
    app.add_middleware(RequestIdMiddleware)
    app.include_router(system_router)
    app.include_router(metrics_router)
    for router in routers:
        app.include_router(router)
    return app
