"""The pool's routes that talk to the chain do so with no database transaction open.

The watch is ``tests.support.chain_reads``'s, on the shared embedded chain: every JSON-RPC
request a route makes must find the database free (SQLite: another connection takes the write
lock at once; PostgreSQL: no connection idle in transaction).
"""

from __future__ import annotations

from tests.pool_service.conftest import Foundation
from tests.support.chain_reads import assert_read_outside_transactions, watching


async def test_the_pool_stats_read_the_bpc_supply_with_no_transaction_open(
    foundation: Foundation, database_url: str
) -> None:
    with watching(foundation.chain.w3, database_url) as watch:
        stats = await foundation.client.get("/v1/pool/stats")

    assert stats.status_code == 200, stats.text
    assert stats.json()["bpc_supply_wei"] == str(foundation.chain.pool.bpc_supply())
    assert_read_outside_transactions(watch, expected={"eth_call"})
