"""The WebSocket stream when one market's writer stops for good in this process, on a service
writing two markets: the followers of that market's book or trades are closed (what they hold
of it is no longer current); the followers of their own orders and fills, which span markets,
are told and stay, and the other market goes on."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from websockets.asyncio.client import connect

from exchange.trading.service import Market
from exchange.trading.writer import MarketWriter
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price, until_stopped
from tests.trading_service.test_ws import Stream, serve, until_closed

FIRST = "BPC-TUSD"
SECOND = "BPC-TUSD-2"

served = contextlib.asynccontextmanager(serve)


@contextlib.asynccontextmanager
async def second_market(desk: Desk) -> AsyncIterator[Market]:
    """A second market on the desk's service, written by a writer of its own: the desk's pair under
    another id (one Vault settles both), as a service writing several markets holds them."""
    spec = dataclasses.replace(desk.trading.markets[FIRST].spec, market_id=SECOND)
    market = Market.build(spec, MarketWriter(spec, desk.trading.sessionmaker))
    await market.writer.start()
    desk.trading.markets[SECOND] = market
    try:
        yield market
    finally:
        del desk.trading.markets[SECOND]
        await market.writer.stop()  # a writer that failed gives the market up without raising again


async def _funded(desk: Desk, key: int) -> Trader:
    trader = await desk.member(key)
    await desk.deposit(trader, desk.market["base"], 100 * WHOLE)
    await desk.deposit(trader, desk.market["quote"], 10_000 * DOLLAR)
    return trader


async def _place(desk: Desk, trader: Trader, market: str, side: str, price_quote: int) -> httpx.Response:
    body = {**desk.order_body(trader, side, price_quote, WHOLE), "market": market}
    return await desk.client.post("/v1/orders", json=body, headers=trader.headers)


async def _stop_for_good(desk: Desk, market: Market, trader: Trader, monkeypatch: pytest.MonkeyPatch) -> None:
    """The market's writer loses its database connection and its recovery fails: it stops for good.
    Its writer must have run a cycle (it holds a connection)."""
    writer = market.writer
    held = writer._connection
    assert held is not None
    driver = (await held.get_raw_connection()).driver_connection
    if held.dialect.name == "postgresql":
        async with desk.trading.sessionmaker() as session:
            await session.execute(select(func.pg_terminate_backend(driver.get_server_pid())))
    else:
        await driver.close()

    async def broken() -> None:
        raise RuntimeError("the journal cannot be read")

    monkeypatch.setattr(writer, "_recover", broken)
    refused = await _place(desk, trader, market.spec.market_id, "sell", price(12))
    assert refused.status_code == 503, refused.text
    await until_stopped(writer)
    assert market.feed.stopped_by is not None


def _is_stopped_notice(message: dict[str, Any], channels: list[str], request_id: str) -> bool:
    return (
        message["type"] == "notice"
        and message["status"] == 503
        and message["problem"].endswith("/trading-unavailable")
        and (message["market"], message["channels"], message["request_id"]) == (SECOND, channels, request_id)
        and SECOND in message["detail"]
        and "id" not in message
    )


async def test_a_private_follower_of_a_stopped_market_is_told_and_keeps_the_other_markets(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await _funded(desk, 0x91), await _funded(desk, 0x92)
    async with second_market(desk) as second, served(desk) as url:
        headers = {**alice.headers, "X-Request-ID": "private-follower-1"}
        async with connect(url, additional_headers=headers) as raw:
            ws = Stream(raw)
            assert (await ws.next())["type"] == "authenticated"
            for channel in ("orders", "fills"):
                assert (await ws.request(op="subscribe", channel=channel))["type"] == "subscribed"
            assert (await ws.request(op="subscribe", channel="trades", market=FIRST))["type"] == "subscribed"
            assert (await _place(desk, alice, SECOND, "sell", price(10))).status_code == 201
            placed = await ws.next()  # the subscription spans both markets
            assert (placed["channel"], placed["data"][0]["market"]) == ("orders", SECOND)

            await _stop_for_good(desk, second, alice, monkeypatch)
            assert _is_stopped_notice(await ws.next(), ["orders", "fills"], "private-follower-1")
            assert (second.feed.order_subscribers, second.feed.fill_subscribers) == ({}, {})

            # The first market goes on: her order there, its trade, her fill.
            assert (await _place(desk, alice, FIRST, "sell", price(10))).status_code == 201
            assert (await _place(desk, bob, FIRST, "buy", price(10))).status_code == 201
            assert (await ws.request(op="ping"))["type"] == "pong"
            seen = {(message["channel"], message.get("market")) for message in ws.pending}
            assert seen == {("orders", None), ("trades", FIRST), ("fills", None)}
            orders = [
                order for message in ws.pending if message["channel"] == "orders" for order in message["data"]
            ]
            assert {order["market"] for order in orders} == {FIRST}
            assert orders[-1]["filled"] == str(WHOLE)
            ws.pending.clear()

            # Subscribing again skips the stopped market with the notice, before the answer.
            assert (await ws.request(op="subscribe", channel="fills"))["type"] == "subscribed"
            (notice,) = ws.pending
            assert _is_stopped_notice(notice, ["fills"], "private-follower-1")
            assert second.feed.fill_subscribers == {}
            ws.pending.clear()
            # Unsubscribing, and signing in as another account, have nothing to do there.
            assert (await ws.request(op="unsubscribe", channel="orders"))["type"] == "unsubscribed"
            bob_token = bob.headers["Authorization"].removeprefix("Bearer ")
            assert (await ws.request(op="auth", token=bob_token))["account"] == bob.address
            assert (await ws.request(op="subscribe", channel="orders"))["type"] == "subscribed"
            assert [message["type"] for message in ws.pending] == ["notice"]
            assert desk.trading.markets[FIRST].feed.order_subscribers.keys() == {bob.address}
            assert alice.address not in desk.trading.markets[FIRST].feed.fill_subscribers


async def test_a_follower_of_a_stopped_markets_book_or_trades_is_closed_with_1011(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether or not it also follows its own orders and fills: what it holds of the market is not current."""
    alice = await _funded(desk, 0x93)
    async with (
        second_market(desk) as second,
        served(desk) as url,
        connect(url) as book_ws,
        connect(url, additional_headers=alice.headers) as both_ws,
    ):
        book, both = Stream(book_ws), Stream(both_ws)
        assert (await book.request(op="subscribe", channel="book", market=SECOND))["type"] == "subscribed"
        assert (await both.next())["type"] == "authenticated"
        assert (await both.request(op="subscribe", channel="orders"))["type"] == "subscribed"
        assert (await both.request(op="subscribe", channel="trades", market=SECOND))["type"] == "subscribed"
        assert (await _place(desk, alice, SECOND, "sell", price(10))).status_code == 201

        await _stop_for_good(desk, second, alice, monkeypatch)
        for stream in (book, both):
            messages, code = await until_closed(stream)
            assert code == 1011
            assert messages[-1]["type"] == "error"
            assert messages[-1]["problem"].endswith("/trading-unavailable")
        feed = second.feed
        assert (feed.book_subscribers, feed.trade_subscribers, feed.order_subscribers) == (set(), set(), {})
        assert desk.trading.markets[FIRST].feed.order_subscribers == {}  # closed: gone everywhere
        async with connect(url) as late_ws:
            refused = await Stream(late_ws).request(op="subscribe", channel="book", market=SECOND)
            assert (refused["type"], refused["status"]) == ("error", 503)


async def test_the_service_stops_every_market_after_one_stopped_for_good(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping a writer that had failed does not raise its failure again, writes no checkpoint of
    its book (not the journal's), and gives its market up; the service's stop goes on to the others."""
    alice = await _funded(desk, 0x93)
    async with second_market(desk) as second:
        assert (await _place(desk, alice, SECOND, "sell", price(10))).status_code == 201
        await _stop_for_good(desk, second, alice, monkeypatch)
        first = desk.trading.markets[FIRST].writer
        assert (await _place(desk, alice, FIRST, "sell", price(10))).status_code == 201
        checkpoints = {FIRST: first.checkpoint_sequence, SECOND: second.writer.checkpoint_sequence}
        desk.trading.markets[FIRST] = desk.trading.markets.pop(FIRST)  # the failed market stops first

        await desk.trading.stop()

        assert not first.running
        assert first.checkpoint_sequence == first.sequence > checkpoints[FIRST]  # stopped and checkpointed
        assert second.writer.checkpoint_sequence == checkpoints[SECOND]
        assert (first.claim.connection, second.writer.claim.connection) == (None, None)


async def test_the_service_stops_the_other_markets_when_one_writer_fails_to_stop(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await _funded(desk, 0x94)
    async with second_market(desk) as second:
        first = desk.trading.markets[FIRST].writer
        assert (await _place(desk, alice, FIRST, "sell", price(10))).status_code == 201
        desk.trading.markets[FIRST] = desk.trading.markets.pop(FIRST)  # the failing one stops first

        async def refusing() -> None:
            raise RuntimeError("the checkpoint's connection is gone")

        with monkeypatch.context() as patched:
            patched.setattr(second.writer, "stop", refusing)
            await desk.trading.stop()

        assert not first.running
        assert first.checkpoint_sequence == first.sequence
