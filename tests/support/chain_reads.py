"""Whether a route talks to the chain with a database transaction open.

A web3 middleware on the test's chain asks the database, on every JSON-RPC request made while
the watch is on, whether a transaction holds it: on SQLite, whether another connection can take
the write lock (``BEGIN IMMEDIATE``, without waiting: every transaction of the service begins
IMMEDIATE); on PostgreSQL, whether a connection to the test's database is ``idle in
transaction``. A request the middleware sees is one the route sends: it must find the database
free, or a slow node would hold SQLite's write lock (every other writer of the service waits) or
a pooled PostgreSQL connection for as long as it takes to answer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from web3 import Web3
from web3.middleware import Web3Middleware
from web3.types import RPCEndpoint, RPCResponse

from exchange.db.engine import sqlite_file
from tests.conftest import run_in_thread


def sqlite_transaction_open(database_url: str) -> bool:
    """Whether a transaction holds the SQLite database's write lock: another connection cannot
    take it at once (every transaction of the service begins IMMEDIATE)."""
    path = sqlite_file(database_url)
    assert path is not None
    connection = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        return True
    else:
        connection.execute("ROLLBACK")
        return False
    finally:
        connection.close()


async def _idle_in_transaction(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
        )
        return count
    finally:
        await connection.close()


def postgres_transaction_open(database_url: str) -> bool:
    """Whether a connection to the PostgreSQL database sits in an open transaction."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    return run_in_thread(_idle_in_transaction(dsn)) > 0


@dataclass
class Watch:
    """The chain requests made while the watch is on, each with whether a database transaction
    was open when it was sent; `meanwhile` runs once, right after the response of the first
    ``eth_getLogs`` (a route's first search of the chain's events), with the watch off."""

    calls: list[tuple[str, bool]] = field(default_factory=list)
    meanwhile: Callable[[], None] | None = None
    on: bool = False

    def open_during(self) -> list[str]:
        return [method for method, open_transaction in self.calls if open_transaction]

    def methods(self) -> set[str]:
        return {method for method, _ in self.calls}


@contextmanager
def watching(w3: Web3, database_url: str) -> Iterator[Watch]:
    """A `Watch` of the chain `w3` talks to, on for the block."""
    transaction_open = (
        sqlite_transaction_open if sqlite_file(database_url) is not None else postgres_transaction_open
    )
    watch = Watch()

    class AskTheDatabase(Web3Middleware):
        def request_processor(self, method: RPCEndpoint, params: Any) -> Any:
            if watch.on:
                watch.calls.append((str(method), transaction_open(database_url)))
            return method, params

        def response_processor(self, method: RPCEndpoint, response: RPCResponse) -> Any:
            if watch.on and method == "eth_getLogs" and watch.meanwhile is not None:
                meanwhile, watch.meanwhile = watch.meanwhile, None
                watch.on = False
                try:
                    meanwhile()
                finally:
                    watch.on = True
            return response

    w3.middleware_onion.add(AskTheDatabase, name="ask-the-database")
    watch.on = True
    try:
        yield watch
    finally:
        watch.on = False
        w3.middleware_onion.remove("ask-the-database")


def assert_read_outside_transactions(watch: Watch, *, expected: set[str]) -> None:
    """Every method of `expected` was called, and no call found a transaction open."""
    assert expected <= watch.methods(), watch.calls
    assert watch.open_during() == [], f"chain read inside a transaction: {watch.calls}"
