"""The pool's routes that talk to the chain, and its background indexer pass, do so with no
database transaction open.

The watch is ``tests.support.chain_reads``'s, on the shared embedded chain: every JSON-RPC
request a route or a pass makes must find the database free (SQLite: another connection takes
the write lock at once; PostgreSQL: no connection idle in transaction).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest
from eth_account import Account
from sqlalchemy import select

from exchange.chain.pool import Tier
from exchange.chain.runtime import ChainRuntime
from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.main import build_app
from exchange.pool.indexer import PoolIndexer
from exchange.pool.models import FundDeposit, IndexerCursor, Member
from exchange.pool.royalty_service import DepositsChangedMeanwhile
from exchange.pool.service import ChainGateway, PoolContext
from exchange.pool.worker_service import build_context, index_once
from exchange.settings import Settings
from tests.conftest import run_in_thread
from tests.pool_service.conftest import Foundation, pool_settings
from tests.pool_service.test_indexer import running
from tests.pool_service.test_royalties import create_run, deposit, next_chain_day, travel_to
from tests.support.chain_reads import assert_read_outside_transactions, watching

MEANWHILE_TIMEOUT_S = 10


@pytest.fixture
def settings(database_url: str) -> Settings:
    # The trading service's poll of the registry is off: it reads the chain on the same Web3 and
    # cancels a suspended member's orders in a transaction of the market writer's, which the
    # watch cannot tell from the route's.
    return pool_settings(database_url, trading_membership_poll_s=0)


async def test_the_pool_stats_read_the_bpc_supply_with_no_transaction_open(
    foundation: Foundation, database_url: str
) -> None:
    with watching(foundation.chain.w3, database_url) as watch:
        stats = await foundation.client.get("/v1/pool/stats")

    assert stats.status_code == 200, stats.text
    assert stats.json()["bpc_supply_wei"] == str(foundation.chain.pool.bpc_supply())
    assert_read_outside_transactions(watch, expected={"eth_call"})


async def test_a_royalty_run_reads_the_chain_with_no_transaction_open(
    foundation: Foundation, database_url: str
) -> None:
    """The catch-up that indexes the period's deposits, and the date of the block it reached."""
    chain = foundation.chain
    day = next_chain_day(chain)
    deposit(chain, 1_000)
    travel_to(chain, day + timedelta(days=1))
    chain.pool.mint_bpc(Account.create().address, 1)  # a block dated after the period

    with watching(chain.w3, database_url) as watch:
        run = await create_run(foundation, "W1", day, day)

    assert (run["received_wei"], run["carry_out_wei"]) == ("1000", "1000")  # no patent: all carried
    assert_read_outside_transactions(
        watch, expected={"eth_blockNumber", "eth_getLogs", "eth_getBlockByNumber"}
    )


def test_the_royalty_run_route_documents_its_transient_409() -> None:
    conflict = build_app(Settings()).openapi()["paths"]["/v1/admin/royalties/runs"]["post"]["responses"][
        "409"
    ]
    assert DepositsChangedMeanwhile.type_uri() in conflict["description"]
    assert "Retry-After" in conflict["headers"]


# --------------------------------------------------------------------------- the background indexer


def changed_on_chain(chain: ChainRuntime) -> str:
    """A member admitted and suspended, and a deposit, made directly on chain: events for each
    follower of the indexer. The member's address."""
    account = Account.create().address
    chain.pool.admit(account, Tier.LARGE)
    chain.pool.suspend(account)
    deposit(chain, 5)
    return account


async def cursors_of(context: PoolContext) -> dict[str, IndexerCursor]:
    async with context.sessionmaker() as session:
        return {row.name: row for row in (await session.scalars(select(IndexerCursor))).all()}


async def assert_indexed(context: PoolContext, chain: ChainRuntime, account: str) -> None:
    """`account` is suspended, the deposit recorded once, every cursor at the head."""
    async with context.sessionmaker() as session:
        member = await session.get(Member, account)
        deposits = (await session.scalars(select(FundDeposit.amount_wei))).all()
    assert member is not None
    assert (member.tier, member.status) == ("large", "suspended")
    assert deposits == [5]
    head = chain.w3.eth.block_number
    assert {name: row.block for name, row in (await cursors_of(context)).items()} == {
        "registry": head,
        "fund": head,
        "vault": head,
    }


async def test_a_background_indexer_pass_reads_the_chain_with_no_transaction_open(
    settings: Settings, chain_runtime: ChainRuntime, database_url: str
) -> None:
    """The pass of the loop and of the start-up: its check of the head, then each follower's
    events and the blocks that date them."""
    async with running(settings, chain_runtime) as (_, app):
        account = changed_on_chain(chain_runtime)

        with watching(chain_runtime.w3, database_url) as watch:
            await index_once(app.state.pool)

        assert_read_outside_transactions(
            watch, expected={"eth_blockNumber", "eth_getLogs", "eth_getBlockByNumber"}
        )
        await assert_indexed(app.state.pool, chain_runtime, account)


async def test_an_idle_poll_reads_the_chain_with_no_transaction_open(
    settings: Settings, chain_runtime: ChainRuntime, database_url: str
) -> None:
    """A process's first poll finds nothing new: the head, and the deployment's first block its
    cursors are checked against, are read with no transaction open, and nothing is written."""
    async with running(settings, chain_runtime) as (_, app):
        context = build_context(app)  # as a process that just started: the deployment not read yet
        before = {name: row.updated_at for name, row in (await cursors_of(context)).items()}

        with watching(chain_runtime.w3, database_url) as watch:
            await index_once(context)

        assert_read_outside_transactions(watch, expected={"eth_blockNumber", "eth_getBlockByNumber"})
        assert len(watch.calls) == 2  # the check's reads only: nothing to catch up
        assert {name: row.updated_at for name, row in (await cursors_of(context)).items()} == before


def caught_up_by_a_request_meanwhile(chain: ChainRuntime, settings: Settings) -> Callable[[], None]:
    """Catch every follower up as a membership request does, in one transaction, with an indexer
    of its own (its own connections, its own event loop). Bounded: a pass that held its cursor's
    lock while the chain answered would have it wait for the pass, and the pass for it."""

    async def catch_up() -> None:
        engine = create_engine_for_url(settings.database_url)
        try:
            indexer = PoolIndexer(
                ChainGateway(chain),
                confirmations=settings.pool_indexer_confirmations,
                max_blocks=settings.pool_indexer_max_blocks,
            )
            async with create_sessionmaker(engine)() as session, session.begin():
                await asyncio.wait_for(indexer.catch_up(session), timeout=MEANWHILE_TIMEOUT_S)
        finally:
            await engine.dispose()

    return lambda: run_in_thread(catch_up())


async def test_a_background_pass_overtaken_by_a_request_reads_its_cursors_again(
    settings: Settings, chain_runtime: ChainRuntime, database_url: str
) -> None:
    """A request applies the events the pass has just read: the pass finds the cursor moved when
    it comes to apply them and reads it again. Nothing is applied twice, and the chain is asked
    nothing more for the followers the request caught up too."""
    async with running(settings, chain_runtime) as (_, app):
        account = changed_on_chain(chain_runtime)

        with watching(chain_runtime.w3, database_url) as watch:
            watch.meanwhile = caught_up_by_a_request_meanwhile(chain_runtime, settings)
            await index_once(app.state.pool)

        assert_read_outside_transactions(watch, expected={"eth_blockNumber", "eth_getLogs"})
        assert [method for method, _ in watch.calls].count("eth_getLogs") == 1  # the registry's range
        await assert_indexed(app.state.pool, chain_runtime, account)
