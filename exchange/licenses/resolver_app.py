"""The resolver-only app: ``GET /v1/devices/{scheme}/{id}``, ``POST /v1/devices/query`` and the
Digital Link paths, and nothing else.

The same app factory, error handler and routes as the full service, but only
``resolver_startup``: no chain connection, no indexer, no settlement or other writer. It reads
the database the service writes (or a replica of it, ``licence_read_database_url``) and holds
no state but its tree cache, so any number of processes can serve it, on one machine
(``exchange licence resolver --workers N``) or behind a load balancer. It never migrates the
database: the service does.

Its two query routes are answered ahead of the app's routing and middleware
(``resolver_routes.LeanFront``): under ``/v1/devices`` it has no other routes.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from exchange.api.app import create_app, freeze_start_heap
from exchange.api.body_limit import limit_bodies
from exchange.kit.logging import configure_logging
from exchange.licenses import resolver_routes
from exchange.licenses.lifespan import resolver_startup
from exchange.settings import Settings, get_settings


def create_resolver_app(settings: Settings | None = None) -> FastAPI:
    """The resolver-only app for `settings` (default: the environment's, in a server's worker
    process, which then freezes its start-up heap once started: see ``freeze_start_heap``)."""
    serving = settings is None
    if settings is None:
        settings = get_settings()
        # A factory the server calls in each worker process: each configures its own logging.
        configure_logging(log_format=settings.log_format, log_level=settings.log_level)
        # Without an access log, as the command starts the server (access_log=False): configuring
        # logging hands uvicorn's access records to the root handler again, and the server would
        # then build one per request (and write it, at INFO).
        access = logging.getLogger("uvicorn.access")
        access.handlers.clear()
        access.propagate = False
    app = create_app(
        settings.model_copy(update={"migrate_on_start": False}),
        routers=[resolver_routes.router, resolver_routes.link_router],
        # A bulk answer's objects outlive a young collection or two, and full collections, which
        # come every bulk query or so, walked the whole start-up heap (~100 ms each) otherwise.
        lifespan_hooks=[resolver_startup(), *([freeze_start_heap] if serving else [])],
    )
    # The query routes answered ahead of routing.
    app.add_middleware(resolver_routes.LeanFront)
    # Outermost: request bodies over their limit are refused before anyone reads them.
    limit_bodies(app, settings.request_body_max_bytes, resolver_routes.BODY_LIMITS)
    return app
