"""Crash test: the service as a process under order load, killed with SIGKILL at random moments, restarted.

After every restart and at the end:

* every order the service acknowledged (201 or 200) is in the journal, with the id it was acknowledged with;
* no order, cancel or trade is there twice, and resending an order whose answer was lost
  returns the order it became (200) or places it once (201) — never a second order;
* the book the restarted service rebuilt has the state hash of a fresh replay of the journal,
  and every journal head the service reported before a crash (sequence, state hash) is what the
  replay gives at that sequence;
* the ledger reconciles: per token, the balances add up to the deposits, and each account's
  reservation is exactly what its open orders still hold.

Runs on PostgreSQL and a Hardhat node (the service loads its deployment manifest at each restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.orderbook import OrderBook, Rejected
from exchange.trading.journal import journal
from exchange.trading.markets import MarketSpec
from exchange.trading.models import LedgerBalance, OrderStatus, TradingBook, TradingFill, TradingOrder
from exchange.trading.signing import OrderDigester
from tests.chain.nodes import hardhat_node
from tests.conftest import PostgresServer
from tests.trading_service.live import (
    Connection,
    LiveTrader,
    MarketInfo,
    ServerProcess,
    accounts,
    admit,
    credit,
    market_info,
    order_request,
    sign_in,
    start_server,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.hardhat]

CRASHES = 5
DEPOSIT = 10**30
CONNECTIONS = 6


@pytest.fixture
def crash_database(postgres_server: PostgresServer, postgres_template: str) -> Iterator[str]:
    name = f"exchange_crash_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(name, template=postgres_template)
    try:
        yield postgres_server.url_for(name)
    finally:
        postgres_server.drop_database(name)


class Load:
    """Signed orders sent until the service dies; what it acknowledged, and what it never answered."""

    def __init__(self, market: MarketInfo, traders: list[LiveTrader], seed: int) -> None:
        self.market = market
        self.traders = traders
        self.digester = OrderDigester(market.chain_id, market.vault)
        self.rng = random.Random(seed)  # reproducible load
        self.acknowledged: dict[str, str] = {}  # client order id -> order id
        self.unanswered: dict[str, tuple[bytes, str]] = {}  # client order id -> (body, token)
        self.heads: list[tuple[int, str]] = []  # journal heads reported before a crash
        self._count = 0

    def next_order(self) -> tuple[str, bytes, str]:
        self._count += 1
        trader = self.rng.choice(self.traders)
        client_order_id = f"o{self._count}"
        body = order_request(
            self.market,
            self.digester,
            trader,
            side=self.rng.choice(["buy", "sell"]),
            price_quote=(1_000 + self.rng.randint(-3, 3)) * self.market.tick_size,
            amount_base=self.market.min_amount + self.rng.randint(0, 30) * self.market.lot_size,
            client_order_id=client_order_id,
            expiry_unix=int(time.time()) + 3600,
            time_in_force=self.rng.choice(["GTC", "GTC", "GTC", "IOC"]),
        )
        return client_order_id, body, trader.token

    def record(self, client_order_id: str, status: int, reply: bytes) -> None:
        assert status in (200, 201), (status, reply[:300])
        order = httpx.Response(status, content=reply).json()
        assert order["client_order_id"] == client_order_id
        previous = self.acknowledged.setdefault(client_order_id, order["id"])
        assert previous == order["id"], f"{client_order_id} acknowledged as {previous} and as {order['id']}"

    async def sender(self, port: int) -> None:
        try:
            connection = await Connection.open(port)
        except OSError:
            return
        try:
            while True:
                client_order_id, body, token = self.next_order()
                self.unanswered[client_order_id] = (body, token)
                try:
                    status, reply = await connection.request(
                        "POST", "/v1/orders", body, {"Authorization": f"Bearer {token}"}
                    )
                except (OSError, asyncio.IncompleteReadError):
                    return  # killed: this order's fate is unknown until it is resent
                del self.unanswered[client_order_id]
                self.record(client_order_id, status, reply)
        finally:
            await connection.close()

    async def prober(self, port: int, market_id: str) -> None:
        try:
            connection = await Connection.open(port)
        except OSError:
            return
        try:
            while True:
                status, reply = await connection.request("GET", f"/v1/markets/{market_id}/journal")
                assert status == 200, reply
                head = httpx.Response(status, content=reply).json()
                self.heads.append((head["sequence"], head["state_hash"]))
                await asyncio.sleep(0.02)
        except (OSError, asyncio.IncompleteReadError):
            return
        finally:
            await connection.close()

    async def run_until_killed(self, server: ServerProcess, market_id: str, kill_after_s: float) -> None:
        tasks = [asyncio.create_task(self.sender(server.port)) for _ in range(CONNECTIONS)]
        tasks.append(asyncio.create_task(self.prober(server.port, market_id)))
        await asyncio.sleep(kill_after_s)
        server.kill()
        await asyncio.gather(*tasks)

    async def resend_unanswered(self, port: int) -> int:
        """Resend every order whose answer was lost; each becomes exactly one order."""
        connection = await Connection.open(port)
        try:
            for client_order_id, (body, token) in list(self.unanswered.items()):
                status, reply = await connection.request(
                    "POST", "/v1/orders", body, {"Authorization": f"Bearer {token}"}
                )
                self.record(client_order_id, status, reply)
                del self.unanswered[client_order_id]
        finally:
            await connection.close()
        return len(self.acknowledged)


async def journal_head(port: int, market_id: str) -> dict[str, object]:
    connection = await Connection.open(port)
    try:
        status, reply = await connection.request("GET", f"/v1/markets/{market_id}/journal")
    finally:
        await connection.close()
    assert status == 200, reply
    head: dict[str, object] = httpx.Response(status, content=reply).json()
    return head


async def _replayed_hashes(
    session: AsyncSession, spec: MarketSpec, wanted: set[int]
) -> tuple[int, str, dict[int, str]]:
    """Replay the whole journal in a fresh book: last sequence, final hash, hashes at ``wanted`` sequences."""
    book = OrderBook(spec.book_config())
    hashes: dict[int, str] = {}
    last = 0
    if 0 in wanted:
        hashes[0] = book.state_hash().hex()
    async for sequence, command in journal(session, spec.market_id, spec.tick_size_quote):
        events = book.apply(command)
        assert not (events and isinstance(events[0], Rejected)), (sequence, events[0])
        last = sequence
        if sequence in wanted:
            hashes[sequence] = book.state_hash().hex()
    return last, book.state_hash().hex(), hashes


async def _check_database(database_url: str, load: Load, spec: MarketSpec, head: dict[str, object]) -> None:
    engine = create_engine_for_url(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            orders = {row.client_order_id: row for row in (await session.scalars(select(TradingOrder))).all()}
            for client_order_id, order_id in load.acknowledged.items():
                assert client_order_id in orders, f"acknowledged order {client_order_id} is lost"
                assert str(orders[client_order_id].id) == order_id
            assert len(orders) == len(load.acknowledged), "orders nobody was told about"
            fills = (
                await session.execute(select(func.count(), func.count(TradingFill.trade_id.distinct())))
            ).one()
            assert fills[0] == fills[1], "a trade is journaled twice"

            book_head = await session.get(TradingBook, spec.market_id)
            assert book_head is not None
            wanted = {sequence for sequence, _ in load.heads}
            last, final_hash, at = await _replayed_hashes(session, spec, wanted)
            assert last == book_head.sequence == head["sequence"]
            assert final_hash == head["state_hash"], "the restarted book differs from a replay of the journal"
            for sequence, reported in load.heads:
                assert at[sequence] == reported, (
                    f"the book at {sequence} before a crash differs from the replay"
                )

            balances = (await session.scalars(select(LedgerBalance))).all()
            totals: dict[str, int] = defaultdict(int)
            for balance in balances:
                totals[balance.token] += balance.total
            for token in (spec.base_token, spec.quote_token):
                assert totals[token] == DEPOSIT * len(load.traders), f"{token} is not conserved"
            held: dict[tuple[str, str], int] = defaultdict(int)
            for order in orders.values():
                if order.status == OrderStatus.OPEN:
                    held[(order.account, order.reserved_token)] += order.reserved_amount
                else:
                    assert order.reserved_amount == 0, order.client_order_id
            for balance in balances:
                if balance.account.startswith("0x"):
                    assert balance.reserved == held[(balance.account, balance.token)], balance.account
    finally:
        await engine.dispose()


async def test_sigkill_under_load_loses_no_acknowledged_order(crash_database: str, tmp_path: Path) -> None:
    rng = random.Random(9457)
    settings = {
        "trading_checkpoint_every": 40,
        "trading_membership_ttl_s": 3600,
        "trading_membership_poll_s": 0,
        "trading_rate_account_per_s": 100_000,
        "trading_rate_account_burst": 100_000,
        "trading_rate_ip_per_s": 100_000,
        "trading_rate_ip_burst": 100_000,
        "log_level": "WARNING",
    }
    with hardhat_node() as rpc_url:
        server = start_server(crash_database, rpc_url, tmp_path, **settings)
        try:
            market = market_info(server.url)
            members = accounts(4, offset=0xC0)
            await asyncio.to_thread(admit, server.url, rpc_url, members)
            await credit(crash_database, market, members, DEPOSIT)
            load = Load(market, await sign_in(server.url, members), seed=rng.randrange(2**32))
            for _ in range(CRASHES):
                await load.run_until_killed(server, market.market_id, kill_after_s=rng.uniform(0.2, 1.2))
                await asyncio.to_thread(server.start)  # refuses to start if recovery finds a mismatch
                await load.resend_unanswered(server.port)
            head = await journal_head(server.port, market.market_id)
            spec = MarketSpec(
                market_id=market.market_id,
                base_symbol="BPC",
                quote_symbol="TUSD",
                base_token=market.base_token,
                quote_token=market.quote_token,
                base_decimals=18,
                quote_decimals=6,
                chain_id=market.chain_id,
                vault=market.vault,
                tick_size_quote=market.tick_size,
                lot_size_base=market.lot_size,
                min_amount_base=market.min_amount,
                maker_fee_bps=0,
                taker_fee_bps=0,
            )
        finally:
            server.stop()
    assert len(load.acknowledged) > 50
    assert len(load.heads) > CRASHES
    with contextlib.suppress(FileNotFoundError):
        assert "trading.cycle_failed" not in (tmp_path / "server.log").read_text()
    await _check_database(crash_database, load, spec, head)
