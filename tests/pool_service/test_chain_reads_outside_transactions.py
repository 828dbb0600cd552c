"""The pool's routes that talk to the chain do so with no database transaction open.

The watch is ``tests.support.chain_reads``'s, on the shared embedded chain: every JSON-RPC
request a route makes must find the database free (SQLite: another connection takes the write
lock at once; PostgreSQL: no connection idle in transaction).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from eth_account import Account

from exchange.main import build_app
from exchange.pool.royalty_service import DepositsChangedMeanwhile
from exchange.settings import Settings
from tests.pool_service.conftest import Foundation, pool_settings
from tests.pool_service.test_royalties import create_run, deposit, next_chain_day, travel_to
from tests.support.chain_reads import assert_read_outside_transactions, watching


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
