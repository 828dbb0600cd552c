"""The whole service: every room's routers and start-up hooks on the one app."""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import sys
from pathlib import Path
from typing import IO, Any

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from exchange.api.app import create_app, freeze_start_heap
from exchange.api.body_limit import limit_bodies
from exchange.auth.routes import router as auth_router
from exchange.chain.errors import ChainReplaced, DeploymentMismatch, ManifestInvalid
from exchange.chain.lifespan import chain_startup
from exchange.chain.routes import router as chain_router
from exchange.chain.runtime import ChainRuntime
from exchange.db.engine import sqlite_file
from exchange.kit.logging import configure_logging, get_logger
from exchange.licenses.device_routes import link_router as device_link_router
from exchange.licenses.device_routes import router as devices_router
from exchange.licenses.lifespan import licensing_startup
from exchange.licenses.resolver_routes import BODY_LIMITS
from exchange.licenses.routes import router as licences_router
from exchange.pool.routes import router as pool_router
from exchange.pool.worker_service import pool_startup
from exchange.settings import Settings, get_settings
from exchange.trading.market_claim import MarketOwned
from exchange.trading.market_routes import router as market_data_router
from exchange.trading.routes import OrderFront
from exchange.trading.routes import private as trading_router
from exchange.trading.routes import public as markets_router
from exchange.trading.service import trading_startup
from exchange.trading.settlement_service import settlement_startup
from exchange.trading.ws import router as ws_router


def build_app(settings: Settings, *, chain: ChainRuntime | None = None, serving: bool = False) -> FastAPI:
    """The service app for `settings`; `chain` injects an already running chain (tests, tools).

    ``serving``: the app is this process's one long-running service (``exchange serve``),
    whose start-up heap is frozen once started (:func:`exchange.api.app.freeze_start_heap`).
    """
    app = create_app(
        settings,
        routers=[
            # First: the order path is the hottest, and routes are matched in this order.
            trading_router,
            markets_router,
            market_data_router,
            auth_router,
            chain_router,
            licences_router,
            devices_router,
            device_link_router,
            pool_router,
            ws_router,
        ],
        lifespan_hooks=[
            chain_startup(chain),
            licensing_startup(),
            pool_startup(),
            trading_startup(),
            settlement_startup(),
            *([freeze_start_heap] if serving else []),
        ],
    )
    # Well-formed order placements are answered ahead of routing (OrderFront).
    app.add_middleware(OrderFront)
    # Outermost: request bodies over their limit are refused before anyone reads them.
    limit_bodies(
        app,
        settings.request_body_max_bytes,
        {**BODY_LIMITS, "/v1/devices/batches": settings.device_upload_body_max_bytes},
    )
    return app


def server_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options the service runs with, besides its address."""
    return {
        "log_config": None,
        "proxy_headers": False,
        "server_header": False,
        "ws_per_message_deflate": settings.ws_per_message_deflate,
        # A client's frames are small operations; a bigger one is refused (close 1009) before parsing.
        "ws_max_size": settings.ws_max_message_bytes,
    }


_HELD_LOCKS: list[IO[str]] = []  # the embedded database's run lock, held until the process ends


class DatabaseInUse(Exception):
    """Another process is serving from the embedded database (it holds the database's run lock)."""


class DatabaseUnwritable(Exception):
    """The SQLite database's directory, run lock or last run's files cannot be written here."""


def claim_embedded_database(settings: Settings) -> Path | None:
    """On the embedded defaults, take the SQLite database for this process and move the last
    run's database aside; where to, or None.

    The in-process EVM lives only as long as the process, and every start deploys a new pool
    on a new chain. What the default database holds from an earlier start on its chain
    (balances, orders, members: it has a ``chain_anchor``) describes a chain that is gone, so
    each such start begins on a new database; the previous one is kept, once, as
    ``<name>.previous`` beside it. A database no service has started on (patents imported by
    the command line, say) is kept. This process holds ``<name>.lock`` while it runs; when
    another process holds it, that process is serving from the database, which is left to it,
    and :class:`DatabaseInUse` is raised: a second service on the embedded defaults could only
    fail (its new chain is not the one the database belongs to). A database that was
    configured (``DATABASE_URL``) is never moved: on a chain other than its own the service
    refuses to start (``exchange.chain.lifespan``).

    The lock is taken on every SQLite file a service starts on, configured or not: two services
    on one file would each write its market, with two books of one journal (PostgreSQL refuses
    the second with its market claim, ``exchange.trading.market_claim``).
    """
    database = sqlite_file(settings.database_url)
    if database is None:  # PostgreSQL, or SQLite in memory
        return None
    lock_path = database.with_name(database.name + ".lock")
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        lock = lock_path.open("a")
    except OSError as error:
        raise DatabaseUnwritable(
            f"cannot take the run lock {lock_path}: {_failed_on(error)}; the database's directory "
            "must be one this process may write (or give it another: DATABASE_URL)"
        ) from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DatabaseInUse(
            f"another process is already serving from {database} (it holds {lock_path}): "
            "stop it first, or give this one a database of its own (DATABASE_URL)"
        ) from None
    except OSError as error:  # a file system without locks
        lock.close()
        raise DatabaseUnwritable(f"cannot take the run lock {lock_path}: {_failed_on(error)}") from None
    _HELD_LOCKS.append(lock)
    if not settings.uses_embedded_chain or "database_url" in settings.model_fields_set:
        return None
    if not database.is_file() or not _anchored(database):
        return None
    previous = database.with_name(database.name + ".previous")
    # SQLite's write-ahead log and its index go with the database. The old copies go first; then
    # the files move, all or none: a failed move puts back those moved before it.
    moves = [
        (Path(f"{database}{suffix}"), Path(f"{previous}{suffix}"))
        for suffix in ("", "-wal", "-shm")
        if Path(f"{database}{suffix}").exists()
    ]
    moved: list[tuple[Path, Path]] = []
    try:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{previous}{suffix}").unlink(missing_ok=True)
        for current, aside in moves:
            current.rename(aside)
            moved.append((current, aside))
    except OSError as error:
        for current, aside in reversed(moved):
            with contextlib.suppress(OSError):  # what cannot be put back stays where it went
                aside.rename(current)
        raise DatabaseUnwritable(
            f"cannot set the last run's database aside as {previous}: {_failed_on(error)}"
        ) from None
    return previous


def _failed_on(error: OSError) -> str:
    """What an operating system error says, with the path it names."""
    reason = error.strerror or str(error)
    return f"{reason} ({error.filename})" if error.filename else reason


def set_aside_embedded_database(settings: Settings) -> Path | None:
    """:func:`claim_embedded_database`, but None instead of an error for a database another
    process is serving from (which is left as it is)."""
    try:
        return claim_embedded_database(settings)
    except DatabaseInUse:
        return None


def _anchored(database: Path) -> bool:
    """Whether a service has started on this SQLite database (it recorded the chain it ran on)."""
    try:
        with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as connection:
            return connection.execute("SELECT 1 FROM chain_anchor LIMIT 1").fetchone() is not None
    except sqlite3.Error:  # no such table yet, or not a database this service wrote
        return False


def _preflight(settings: Settings) -> None:
    """Exit 2 with one line when the database or the chain cannot be reached, before the app starts.

    The app's start would meet either as an exception that uvicorn reports as a whole
    traceback, then exit 3; these are an operator's everyday mistakes (a wrong URL, a stopped
    server), so they get the line the other commands give (``exchange.cli.reach_database``).
    """
    import asyncio

    from web3 import HTTPProvider, Web3

    from exchange.cli import reach_database

    if not asyncio.run(reach_database(settings.database_url, sys.stderr)):
        raise SystemExit(2)
    url = settings.chain_rpc_url
    if url and not Web3(HTTPProvider(url, request_kwargs={"timeout": 10})).is_connected():
        print(f"error: no chain answers at {url} (CHAIN_RPC_URL)", file=sys.stderr)
        raise SystemExit(2)


def serve(host: str | None = None, port: int | None = None) -> None:
    """Run the service with uvicorn on the configured (or given) address.

    A given ``host`` or ``port`` replaces the configured one in the settings the app is built
    with, so that what the app derives from its address names the one it listens on: the
    Sign-In with Ethereum domain (unless ``EXCHANGE_SIWE_DOMAIN`` is set) and the device links'
    base (unless ``EXCHANGE_LICENCE_RESOLVER_BASE`` is).
    """
    import uvicorn

    given: dict[str, Any] = {
        name: value for name, value in (("host", host), ("port", port)) if value is not None
    }
    try:
        settings = Settings(**given) if given else get_settings()
    except ValidationError as exc:
        # Never a traceback for a configuration mistake; pydantic's message names the
        # variable and the rule (and, by construction, never echoes a secret).
        print(f"error: invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(log_format=settings.log_format, log_level=settings.log_level)
    try:
        previous = claim_embedded_database(settings)
    except DatabaseInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except DatabaseUnwritable as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if previous is not None:
        get_logger(__name__).info("db.embedded_previous_set_aside", moved_to=str(previous))
    _preflight(settings)
    app = StartRefusals(build_app(settings, serving=True))
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, **server_options(settings))
    except SystemExit:
        if app.refused is not None:  # said in one line as it happened; uvicorn's own code is 3
            raise SystemExit(2) from None
        raise


# Refusals to start whose message says what is wrong and what to do: a traceback adds nothing.
START_REFUSALS: tuple[type[Exception], ...] = (
    MarketOwned,
    ChainReplaced,
    DeploymentMismatch,
    ManifestInvalid,
)


class StartRefusals:
    """The app as ``exchange serve`` runs it: a start refused for a reason in ``START_REFUSALS``
    is reported as one line (``error: …`` on stderr), not as the traceback that uvicorn logs for
    any other failed start; ``refused`` holds it. Everything else passes through unchanged.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.state = app.state
        self.refused: Exception | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold_start_failure(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":  # its message is the traceback
                held.append(message)
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold_start_failure)
        except START_REFUSALS as refusal:
            if not held:  # not its start that failed (its stop): as any other failure
                raise
            self.refused = refusal
            print(f"error: {refusal}", file=sys.stderr, flush=True)
            await send({"type": "lifespan.startup.failed", "message": ""})
        except BaseException:
            for message in held:
                await send(message)
            raise
