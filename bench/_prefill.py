"""A past for the benchmarks' database: the tables of an exchange that has traded for months.

The benchmarks start on an empty database, where every index is small and in memory; a
statement whose index stops fitting, or a plan that degrades with a table's size, never
shows there. :func:`prefill` migrates the database and writes, before the service starts,
``orders`` ended orders of a market of their own (``PAST_MARKET``, which the service does not
trade), spread over ``accounts`` accounts, with random order hashes as real ones are; a
settled fill for every pair of them; and the four ledger entries of each fill. They go into
the same tables and indexes as the service's own rows, so every insert of the run lands in
indexes of that size, and every unique check of an order (its hash, nonce and client order
id) looks through them. It runs on PostgreSQL, by ``generate_series``, in chunks.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import asyncpg
from sqlalchemy.engine import make_url

from exchange.db.migrate import upgrade_to_head_async

PAST_MARKET = "BENCH-PAST"
_CHUNK = 200_000
_WHOLE = 10**18

_ORDERS = """
INSERT INTO trading_orders (
    market_id, sequence, account, client_order_id, side, price_quote, amount_base, max_fee_bps,
    nonce, expiry_unix, order_hash, signature, time_in_force, status, filled_base, remaining_base,
    reserved_token, reserved_amount, cost_quote, fee_quote, last_trade_at, created_at, updated_at)
SELECT $1, g, '0x' || lpad(to_hex(4096 + g % $4), 40, '0'), 'past-' || g,
       CASE WHEN g % 2 = 1 THEN 'sell' ELSE 'buy' END, '2000000', $5, 50,
       g::text, '4102444800', '0x' || md5(g::text) || md5('past' || g),
       '0x' || repeat('ab', 65), 'GTC', 'closed', $5, '0', $6, '0', '2000000', '4000',
       at, at, at
FROM generate_series($2::bigint, $3::bigint) AS g,
     LATERAL (SELECT now() - make_interval(secs => ($7 - g) / 10.0) AS at) AS moment
"""

_FILLS = """
INSERT INTO trading_fills (
    market_id, trade_id, sequence, maker_order_id, taker_order_id, maker_account, taker_account,
    taker_side, price_quote, amount_base, quote_amount, maker_fee_bps, taker_fee_bps, buyer_fee,
    seller_fee, settlement_state, created_at)
SELECT m.market_id, (m.sequence + 1) / 2, t.sequence, m.id, t.id, m.account, t.account,
       'buy', '2000000', m.amount_base, '2000000', 10, 20, '4000', '2000', 'settled', t.created_at
FROM trading_orders AS m
JOIN trading_orders AS t ON t.market_id = m.market_id AND t.sequence = m.sequence + 1
WHERE m.market_id = $1 AND m.sequence BETWEEN $2 AND $3 AND m.sequence % 2 = 1
"""

_ENTRIES = """
INSERT INTO ledger_entries (account, token, total_delta, reserved_delta, cause, reference, created_at)
SELECT entry.account, entry.token, entry.delta, '0', 'fill', 'fill:' || f.id, f.created_at
FROM trading_fills AS f,
LATERAL (VALUES (f.taker_account, $4, '-2004000'), (f.taker_account, $5, $6),
                (f.maker_account, $5, '-' || $6), (f.maker_account, $4, '1998000'))
        AS entry(account, token, delta)
WHERE f.market_id = $1 AND f.trade_id BETWEEN $2 AND $3
"""


async def prefill(database_url: str, orders: int, *, accounts: int = 10_000) -> None:
    """Migrate the database at ``database_url`` (PostgreSQL) and write ``orders`` past orders,
    their fills and ledger entries into it (see the module's docstring); progress on stderr."""
    if orders <= 0:
        return
    await upgrade_to_head_async(database_url)
    url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(url)
    started = time.perf_counter()
    try:
        for low in range(1, orders + 1, _CHUNK):
            high = min(orders, low + _CHUNK - 1)
            async with connection.transaction():
                await connection.execute(
                    _ORDERS, PAST_MARKET, low, high, accounts, str(_WHOLE), "0x" + "00" * 19 + "01", orders
                )
                await connection.execute(_FILLS, PAST_MARKET, low, high)
                await connection.execute(
                    _ENTRIES,
                    PAST_MARKET,
                    (low + 1) // 2,
                    high // 2,
                    "0x" + "00" * 19 + "02",
                    "0x" + "00" * 19 + "01",
                    str(_WHOLE),
                )
            elapsed = time.perf_counter() - started
            print(f"prefill: {high:,} of {orders:,} past orders written ({elapsed:.0f} s)", file=sys.stderr)
        counts = [
            await connection.fetchval(sql, PAST_MARKET)
            for sql in (
                "SELECT count(*) FROM trading_orders WHERE market_id = $1",
                "SELECT count(*) FROM trading_fills WHERE market_id = $1",
                "SELECT count(*) FROM ledger_entries AS e JOIN trading_fills AS f"
                " ON e.reference = 'fill:' || f.id WHERE f.market_id = $1",
            )
        ]
        n_orders, n_fills, n_entries = counts
        print(f"prefill: {n_orders:,} orders, {n_fills:,} fills, {n_entries:,} entries", file=sys.stderr)
        # Settled before the run: no autovacuum of the new rows, nor a checkpoint of them, during it.
        await connection.execute("VACUUM (ANALYZE)")
        try:
            await connection.execute("CHECKPOINT")
        except asyncpg.InsufficientPrivilegeError:
            print("prefill: no CHECKPOINT (not a superuser): one may come during the run", file=sys.stderr)
    finally:
        await connection.close()


@contextmanager
def prefilled(database_url: str, orders: int) -> Iterator[str]:
    """``database_url``, once :func:`prefill` wrote ``orders`` past orders into it (in a thread of
    its own, so that it can be entered where an event loop is already running)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, prefill(database_url, orders)).result()
    yield database_url
