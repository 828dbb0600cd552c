"""A restart rebuilds each book from the database to the same state hash; a damaged journal stops it."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from exchange.chain.runtime import ChainRuntime
from exchange.trading.journal import RecoveryFailed
from exchange.trading.models import TradingBook, TradingFill, TradingOrder
from exchange.trading.signing import NativeBackendMissing
from exchange.trading.writer import MarketWriter
from tests.trading_service.conftest import start_desk, trading_settings
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price


async def _trade_a_while(desk: Desk, traders: list[Trader], seed: int, commands: int) -> None:
    rng = random.Random(seed)
    for _ in range(commands):
        trader = rng.choice(traders)
        action = rng.random()
        if action < 0.3:  # cancel, or replace, one of the trader's open orders
            orders = (
                await desk.client.get("/v1/orders", params={"status": "open"}, headers=trader.headers)
            ).json()
            if not orders["items"]:
                continue
            order = rng.choice(orders["items"])
            if action < 0.15:
                reply = await desk.client.delete(f"/v1/orders/{order['id']}", headers=trader.headers)
                assert reply.status_code == 200, reply.text
                continue
            reply = await desk.replace(
                trader,
                order["id"],
                rng.choice(["buy", "sell"]),
                price(rng.randrange(90, 111) / 10),
                rng.randrange(1, 20) * 10**17,
                time_in_force=rng.choice(["GTC", "GTC", "PO"]),
            )
            assert reply.status_code in (201, 409), reply.text
            continue
        side = rng.choice(["buy", "sell"])
        reply = await desk.place(
            trader,
            side,
            price(rng.randrange(90, 111) / 10),
            rng.randrange(1, 20) * 10**17,
            time_in_force=rng.choice(["GTC", "GTC", "GTC", "IOC", "FOK", "PO"]),
        )
        assert reply.status_code in (201, 409), reply.text


@pytest.mark.parametrize("checkpoint_every", [1_000_000, 7])
async def test_restart_rebuilds_the_same_book(
    database_url: str, chain_runtime: ChainRuntime, checkpoint_every: int
) -> None:
    settings = trading_settings(database_url, trading_checkpoint_every=checkpoint_every)
    traders: list[Trader] = []
    before: dict[str, object] = {}
    balances: list[dict[str, dict[str, int]]] = []
    async for desk in start_desk(settings, chain_runtime):
        traders.extend([await desk.member(0xB0 + index) for index in range(3)])
        for trader in traders:
            await desk.deposit(trader, desk.market["base"], 100 * WHOLE)
            await desk.deposit(trader, desk.market["quote"], 10_000 * DOLLAR)
        await _trade_a_while(desk, traders, seed=checkpoint_every, commands=60)
        before.update(await desk.journal())
        balances.extend([await desk.balances(trader) for trader in traders])
    assert isinstance(before["sequence"], int)
    assert before["sequence"] > 40
    assert before["open_orders"] != 0
    async for desk in start_desk(settings, chain_runtime):
        after = await desk.journal()
        assert after == before
        for trader, balance in zip(traders, balances, strict=True):
            trader.headers = (await desk.member(trader.account, admit=False)).headers
            assert await desk.balances(trader) == balance
        # The rebuilt book trades on: the orders rest where they rested.
        await _trade_a_while(desk, traders, seed=99, commands=10)


async def test_a_journal_that_disagrees_with_the_orders_stops_the_start(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    settings = trading_settings(database_url)
    async for desk in start_desk(settings, chain_runtime):
        trader = await desk.member(0xB8)
        await desk.deposit(trader, desk.market["base"], 10 * WHOLE)
        assert (await desk.place(trader, "sell", price(10), WHOLE)).status_code == 201
        async with desk.trading.sessionmaker() as session, session.begin():
            await session.execute(update(TradingOrder).values(remaining_base=WHOLE // 2))
    with pytest.raises(RecoveryFailed, match="differ from its replayed book"):
        async for _desk in start_desk(settings, chain_runtime):
            pass


async def test_the_service_refuses_to_start_without_the_native_backend(
    database_url: str, chain_runtime: ChainRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECC_BACKEND_CLASS", "eth_keys.backends.native.NativeECCBackend")
    with pytest.raises(NativeBackendMissing):
        async for _desk in start_desk(trading_settings(database_url), chain_runtime):
            pass


async def _one_order_placed(desk: Desk, seed: int) -> tuple[Trader, MarketWriter, AsyncConnection, Any]:
    """A trader with one resting order; the writer, the connection it holds and that one's driver."""
    trader = await desk.member(seed)
    await desk.deposit(trader, desk.market["quote"], 1_000 * DOLLAR)
    assert (await desk.place(trader, "buy", price(9), WHOLE)).status_code == 201
    writer = next(iter(desk.trading.markets.values())).writer
    held = writer._connection  # the connection the writer keeps between cycles
    assert held is not None
    return trader, writer, held, (await held.get_raw_connection()).driver_connection


async def test_a_lost_connection_fails_one_cycle_and_the_writer_trades_on(desk: Desk) -> None:
    trader, _, held, driver = await _one_order_placed(desk, 0xB7)
    if held.dialect.name == "postgresql":
        async with desk.trading.sessionmaker() as session:
            await session.execute(select(func.pg_terminate_backend(driver.get_server_pid())))
    else:
        await driver.close()

    body = desk.order_body(trader, "buy", price(10), WHOLE, client_order_id="after-the-loss")
    lost = await desk.client.post("/v1/orders", json=body, headers=trader.headers)
    assert lost.status_code == 503, lost.text
    assert lost.json()["type"].endswith("/trading-unavailable")
    retried = await desk.client.post("/v1/orders", json=body, headers=trader.headers)
    assert retried.status_code == 201, retried.text
    head = await desk.journal()
    assert (head["sequence"], head["open_orders"]) == (2, 2)


async def test_the_writers_planning_setting_stays_on_its_connection(database_url: str, desk: Desk) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL setting")
    _, writer, held, _ = await _one_order_placed(desk, 0xB8)
    assert await held.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
    assert await held.scalar(text("SHOW max_parallel_workers_per_gather")) == "0"
    await held.rollback()
    driver = (await held.get_raw_connection()).driver_connection

    await writer.stop()
    assert not driver.is_closed()  # back in the pool, for anyone: without the writer's setting
    assert await driver.fetchval("SHOW plan_cache_mode") == "auto"
    parallel = "SELECT setting = reset_val FROM pg_settings WHERE name = 'max_parallel_workers_per_gather'"
    assert await driver.fetchval(parallel)  # the server's own value again


async def test_a_failed_cycle_writes_nothing_and_its_connection_is_not_reused(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    trader, writer, held, driver = await _one_order_placed(desk, 0xB9)
    write = writer._write
    failures = iter([RuntimeError("the disk is full")])

    async def failing_once(cycle: Any) -> None:
        await write(cycle)  # every row of the cycle is sent, then the cycle fails before its commit
        failure = next(failures, None)
        if failure is not None:
            raise failure

    monkeypatch.setattr(writer, "_write", failing_once)
    body = desk.order_body(trader, "buy", price(10), WHOLE, client_order_id="failed-once")
    failed = await desk.client.post("/v1/orders", json=body, headers=trader.headers)
    assert failed.status_code == 503, failed.text
    async with desk.trading.sessionmaker() as session:
        stored = await session.scalar(select(func.count()).select_from(TradingOrder))
    assert stored == 1  # the failed cycle's order row was rolled back with it
    if held.dialect.name == "postgresql":
        # The cycle ran on the asyncpg connection itself: discarded, never pooled in an unknown state.
        assert driver.is_closed()
    retried = await desk.client.post("/v1/orders", json=body, headers=trader.headers)
    assert retried.status_code == 201, retried.text
    head = await desk.journal()
    assert (head["sequence"], head["open_orders"]) == (2, 2)


class _Heard:
    """A feed subscriber that keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def offer(self, message: str) -> None:
        self.messages.append(orjson.loads(message))


async def test_a_cycle_whose_commit_answer_is_lost_is_answered_and_published_as_committed(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, writer, _, _ = await _one_order_placed(desk, 0xBA)  # a resting buy of one at 9
    seller = await desk.member(0xBB)
    await desk.deposit(seller, desk.market["base"], WHOLE)
    feed = desk.trading.markets["BPC-TUSD"].feed
    heard = _Heard()
    feed.trade_subscribers.add(heard)
    feed.add_private(feed.order_subscribers, seller.address, heard)
    transaction = writer._cycle_transaction
    losses = iter([ConnectionResetError("the connection closed while the commit was answered")])

    @contextlib.asynccontextmanager
    async def answer_lost_once() -> AsyncIterator[Any]:
        async with transaction() as db:
            yield db
        loss = next(losses, None)  # committed: only the answer is lost
        if loss is not None:
            raise loss

    monkeypatch.setattr(writer, "_cycle_transaction", answer_lost_once)
    body = desk.order_body(seller, "sell", price(9), WHOLE, client_order_id="answer-lost")
    sold = await desk.client.post("/v1/orders", json=body, headers=seller.headers)
    assert sold.status_code == 201, sold.text  # not "nothing was done": it was done
    assert sold.json()["status"] == "closed"

    async with desk.trading.sessionmaker() as session:
        fill_id = await session.scalar(select(func.max(TradingFill.id)))
    assert fill_id is not None
    assert feed.last_trade_id == fill_id  # the ticker sees the trade
    trades = [trade for m in heard.messages if m["channel"] == "trades" for trade in m["data"]]
    assert [trade["id"] for trade in trades] == [str(fill_id)]
    orders = [order for m in heard.messages if m["channel"] == "orders" for order in m["data"]]
    assert [(order["client_order_id"], order["status"]) for order in orders] == [("answer-lost", "closed")]
    head = await desk.journal()
    assert (head["sequence"], head["open_orders"]) == (2, 0)
    retried = await desk.client.post("/v1/orders", json=body, headers=seller.headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()["id"] == sold.json()["id"]


async def test_a_raised_maker_fee_cancels_the_resting_orders_it_exceeds_at_start(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    old_fees = trading_settings(database_url)  # maker 10, taker 20: a cap of 20 is the minimum
    assert (old_fees.trading_maker_fee_bps, old_fees.trading_taker_fee_bps) == (10, 20)
    raised = trading_settings(database_url, trading_maker_fee_bps=25, trading_taker_fee_bps=30)
    async for desk in start_desk(old_fees, chain_runtime):
        seller = await desk.member(0xBA)
        buyer = await desk.member(0xBB)
        await desk.deposit(seller, desk.market["base"], 10 * WHOLE)
        await desk.deposit(buyer, desk.market["quote"], 1_000 * DOLLAR)
        low_cap = (await desk.place(seller, "sell", price(10), WHOLE, max_fee_bps=20)).json()
        covered = (await desk.place(seller, "sell", price(11), WHOLE, max_fee_bps=25)).json()
        assert (low_cap["status"], covered["status"]) == ("open", "open")
        before = await desk.journal()

    async for desk in start_desk(raised, chain_runtime):
        # Before any command: the order whose cap is below the maker fee left the book, journaled,
        # its reservation released; the one whose cap covers the maker fee rests on.
        head = await desk.journal()
        assert (head["sequence"], head["open_orders"]) == (before["sequence"] + 1, 1)
        seller.headers = (await desk.member(seller.account, admit=False)).headers
        buyer.headers = (await desk.member(buyer.account, admit=False)).headers
        orders = {order["id"]: order for order in await desk.orders(seller)}
        assert (orders[low_cap["id"]]["status"], orders[low_cap["id"]]["cancel_reason"]) == (
            "canceled",
            "fee_above_cap",
        )
        assert orders[low_cap["id"]]["reserved"] == "0"
        assert orders[covered["id"]]["status"] == "open"
        assert (await desk.balances(seller))[desk.market["base"]]["reserved"] == WHOLE

        # A buy that would have crossed the cancelled sell first, with an unrelated order in the
        # same cycle: it trades with the covered sell at the new fees and rests the rest.
        crossing = desk.order_body(buyer, "buy", price(11), 2 * WHOLE, client_order_id="crossing")
        unrelated = desk.order_body(buyer, "buy", price(5), WHOLE, client_order_id="unrelated")
        old_minimum = desk.order_body(buyer, "buy", price(5), WHOLE, max_fee_bps=20)
        reply = await desk.client.post(
            "/v1/orders/batch", json={"orders": [crossing, unrelated, old_minimum]}, headers=buyer.headers
        )
        assert reply.status_code == 200, reply.text
        results = reply.json()["results"]
        assert [result["status"] for result in results] == [201, 201, 422], results
        # Intake holds new orders to both fees: a cap at the old minimum is refused, never queued.
        assert results[2]["problem"]["type"].endswith("/order-refused")
        taken, rested = results[0]["order"], results[1]["order"]
        assert (taken["status"], taken["filled"]) == ("open", str(WHOLE))
        assert rested["status"] == "open"
        [trade] = (await desk.client.get("/v1/account/trades", headers=buyer.headers)).json()["items"]
        assert (trade["order"], trade["price"], trade["taker_or_maker"]) == (
            taken["id"],
            str(price(11)),
            "taker",
        )
        assert trade["fee"]["rate_bps"] == 30
        settled_head = await desk.journal()
        assert settled_head["open_orders"] == 2

    async for desk in start_desk(raised, chain_runtime):
        # The cancel is in the journal: a further start replays it and cancels nothing more.
        assert await desk.journal() == settled_head


_COARSER_TICK = 10**5  # ten cents; the default tick is one cent
_CHECKPOINT = ("checkpoint_sequence", "checkpoint_state_hash", "checkpoint_snapshot")


async def _book_row(desk: Desk) -> dict[str, Any]:
    async with desk.trading.sessionmaker() as session:
        head = await session.get(TradingBook, desk.market["id"])
        assert head is not None
        return {name: getattr(head, name) for name in (*_CHECKPOINT, "sequence", "rules_sequence")}


async def _set_book_row(desk: Desk, **values: Any) -> None:
    async with desk.trading.sessionmaker() as session, session.begin():
        await session.execute(update(TradingBook).values(**values))


async def _sell_resting_off_the_coarser_tick(desk: Desk) -> dict[str, Any]:
    """A sell at 10.01, on the default tick and off the coarser one, resting; the book row at the
    market's first start (as a crash before any checkpoint would leave it)."""
    first = await _book_row(desk)
    seller = await desk.member(0xBC)
    await desk.deposit(seller, desk.market["base"], 10 * WHOLE)
    assert (await desk.place(seller, "sell", price(10.01), WHOLE)).json()["status"] == "open"
    return first


async def test_a_crash_before_any_checkpoint_keeps_the_rules_the_orders_were_placed_under(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    # The market's first start recorded its rules. A crash before any checkpoint leaves that
    # record; a start with a coarser tick would move the resting sell to 10.00 (a fill below
    # the price its maker signed), so it is refused while the order rests.
    async for desk in start_desk(trading_settings(database_url), chain_runtime):
        first = await _sell_resting_off_the_coarser_tick(desk)
    assert first["checkpoint_snapshot"] is not None
    assert first["checkpoint_sequence"] == first["sequence"] == 0
    restore = {name: first[name] for name in _CHECKPOINT}
    async for desk in start_desk(trading_settings(database_url), chain_runtime):
        await _set_book_row(desk, **restore)
    coarser = trading_settings(database_url, trading_tick_size_quote=_COARSER_TICK)
    with pytest.raises(RecoveryFailed, match="changed while 1 orders rest"):
        async for _desk in start_desk(coarser, chain_runtime):
            pass
    # With the tick it had, the market starts, its sell where it was signed.
    async for desk in start_desk(trading_settings(database_url), chain_runtime):
        book = (await desk.client.get(f"/v1/markets/{desk.market['id']}/orderbook")).json()
        assert [level[0] for level in book["asks"]] == [str(price(10.01))]


async def test_a_journal_from_before_rules_were_recorded_refuses_a_price_off_the_tick(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    # A market whose rows predate the recorded rules (no checkpoint): its journal is replayed
    # under the rules it is started with, and a price their tick does not divide stops the start.
    async for desk in start_desk(trading_settings(database_url), chain_runtime):
        await _sell_resting_off_the_coarser_tick(desk)
    async for desk in start_desk(trading_settings(database_url), chain_runtime):
        await _set_book_row(desk, checkpoint_sequence=0, checkpoint_state_hash=None, checkpoint_snapshot=None)
    coarser = trading_settings(database_url, trading_tick_size_quote=_COARSER_TICK)
    with pytest.raises(RecoveryFailed, match="tick size 100000 does not divide"):
        async for _desk in start_desk(coarser, chain_runtime):
            pass
    # Started with its tick, such a market has its rules recorded at once, before any clean stop.
    async for desk in start_desk(trading_settings(database_url), chain_runtime):
        row = await _book_row(desk)
        assert row["checkpoint_snapshot"] is not None
        assert row["checkpoint_sequence"] == row["sequence"] > 0
    with pytest.raises(RecoveryFailed, match="changed while 1 orders rest"):
        async for _desk in start_desk(coarser, chain_runtime):
            pass


async def test_the_rules_change_at_a_start_that_finds_the_book_empty(
    database_url: str, chain_runtime: ChainRuntime
) -> None:
    old_rules = trading_settings(database_url, trading_checkpoint_every=2)
    async for desk in start_desk(old_rules, chain_runtime):
        seller = await desk.member(0xBD)
        buyer = await desk.member(0xBE)
        await desk.deposit(seller, desk.market["base"], 10 * WHOLE)
        await desk.deposit(buyer, desk.market["quote"], 1_000 * DOLLAR)
        order = (await desk.place(seller, "sell", price(10.01), WHOLE)).json()
        taken = await desk.place(buyer, "buy", price(10.01), WHOLE // 2, time_in_force="IOC")
        assert taken.json()["filled"] == str(WHOLE // 2)  # trade 1, under the old rules
        cancelled = await desk.client.delete(f"/v1/orders/{order['id']}", headers=seller.headers)
        assert cancelled.status_code == 200, cancelled.text
        emptied = await desk.journal()
    assert emptied["open_orders"] == 0

    new_rules = trading_settings(
        database_url, trading_tick_size_quote=_COARSER_TICK, trading_checkpoint_every=2
    )
    async for desk in start_desk(new_rules, chain_runtime):
        row = await _book_row(desk)
        assert row["rules_sequence"] == row["checkpoint_sequence"] == emptied["sequence"]
        seller.headers = (await desk.member(seller.account, admit=False)).headers
        off_tick = await desk.place(seller, "sell", price(10.01), WHOLE)
        assert off_tick.status_code == 422, off_tick.text
        for dollars in (10.1, 10.2, 10.3):  # past a checkpoint under the new rules
            assert (await desk.place(seller, "sell", price(dollars), WHOLE)).json()["status"] == "open"
        # The book counts trades on where it stopped: the market's trade ids stay unique.
        buyer.headers = (await desk.member(buyer.account, admit=False)).headers
        taken = await desk.place(buyer, "buy", price(10.1), WHOLE // 2, time_in_force="IOC")
        assert taken.status_code == 201, taken.text
        assert taken.json()["filled"] == str(WHOLE // 2)
        trades = (await desk.client.get(f"/v1/markets/{desk.market['id']}/trades")).json()["items"]
        assert [trade["id"] for trade in trades] == ["2", "1"]
        after = await desk.journal()
    # The next start checks its checkpoint by replaying the journal from the change on, from the
    # empty book the change found: the order at 10.01 before it, off the new tick, is not replayed
    # under the new rules, and the trade ids go on from 1.
    async for desk in start_desk(new_rules, chain_runtime):
        row = await _book_row(desk)
        assert row["checkpoint_sequence"] > row["rules_sequence"] == emptied["sequence"]
        assert await desk.journal() == after
    # Back to the old tick is a change under resting orders: refused.
    with pytest.raises(RecoveryFailed, match="changed while 3 orders rest"):
        async for _desk in start_desk(old_rules, chain_runtime):
            pass
