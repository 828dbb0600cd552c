"""Public market data through HTTP: order book, trades, ticker and candles agree with the trades made."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from alembic import command
from sqlalchemy import select

from exchange.chain.runtime import ChainRuntime
from exchange.db.migrate import alembic_config
from exchange.settings import Settings
from exchange.trading.amounts import PRICE_SCALE_BASE
from exchange.trading.candles import TIMEFRAMES, Candle, bucket_start
from exchange.trading.market_data import VOIDS_RECHECK_S
from exchange.trading.models import TradingCandle, TradingFill
from exchange.trading.service import TradingService
from tests.trading_service.conftest import start_desk
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price

TICK = 10**4  # the test market's tick (Vault price units)
LOT = 10**15
FLOW_TRADERS = (0x61, 0x62)  # the keys of _random_flow's traders


async def _traders(desk: Desk) -> tuple[Trader, Trader]:
    market = desk.market
    alice, bob = [await desk.member(key) for key in FLOW_TRADERS]
    for trader in (alice, bob):
        await desk.deposit(trader, market["base"], 1_000 * WHOLE)
        await desk.deposit(trader, market["quote"], 100_000 * DOLLAR)
    return alice, bob


async def _random_flow(desk: Desk, seed: int, orders: int) -> None:
    """Crossing and resting orders of two members around 10 TUSD."""
    alice, bob = await _traders(desk)
    rng = random.Random(seed)
    for _ in range(orders):
        trader = rng.choice((alice, bob))
        side = rng.choice(("buy", "sell"))
        reply = await desk.place(
            trader,
            side,
            price(10) + rng.randint(-20, 20) * TICK * 10,
            rng.randint(10, 400) * LOT,
            time_in_force=rng.choice(("GTC", "GTC", "GTC", "IOC")),
        )
        assert reply.status_code == 201, reply.text


def _writer_depth(service: TradingService) -> dict[str, list[list[Any]]]:
    market = next(iter(service.markets.values()))
    depth = market.writer.book.depth(10**6)
    tick = market.spec.tick_size_quote
    return {
        "bids": [
            [str(level.price_ticks * tick), str(level.amount_base), level.order_count] for level in depth.bids
        ],
        "asks": [
            [str(level.price_ticks * tick), str(level.amount_base), level.order_count] for level in depth.asks
        ],
    }


async def _all_trades(desk: Desk) -> list[dict[str, Any]]:
    trades: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = (await desk.client.get("/v1/markets/BPC-TUSD/trades", params=params)).json()
        trades.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return trades


def _expected_candles(timeframe: str, trades: list[dict[str, Any]]) -> list[list[Any]]:
    candles: dict[int, Candle] = {}
    for trade in sorted(trades, key=lambda t: int(t["id"])):
        start = bucket_start(timeframe, trade["timestamp"] // 1000)
        p, a, q = int(trade["price"]), int(trade["amount"]), int(trade["cost"])
        one = Candle(start, p, p, p, p, a, q, 1)
        candles[start] = candles[start].merge(one) if start in candles else one
    return [
        [c.start * 1000, str(c.open), str(c.high), str(c.low), str(c.close), str(c.volume)]
        for c in (candles[s] for s in sorted(candles))
    ]


def _assert_ticker_of(ticker: dict[str, Any], trades: list[dict[str, Any]]) -> None:
    """The ticker's 24-hour statistics are those of ``trades`` (all of them inside the window)."""
    in_order = sorted(trades, key=lambda t: int(t["id"]))
    prices = [int(t["price"]) for t in in_order]
    volume = sum(int(t["amount"]) for t in trades)
    quote_volume = sum(int(t["cost"]) for t in trades)
    assert ticker["open"] == str(prices[0])
    assert ticker["close"] == ticker["last"] == str(prices[-1])
    assert (ticker["high"], ticker["low"]) == (str(max(prices)), str(min(prices)))
    assert ticker["base_volume"] == str(volume)
    assert ticker["quote_volume"] == str(quote_volume)
    assert ticker["trades"] == len(trades)
    assert ticker["vwap"] == str(quote_volume * PRICE_SCALE_BASE // volume)
    assert ticker["change"] == str(prices[-1] - prices[0])
    percentage = (Decimal(prices[-1] - prices[0]) * 100 / prices[0]).quantize(
        Decimal("0.01"), ROUND_HALF_EVEN
    )
    assert ticker["percentage"] == str(percentage)


async def test_book_trades_ticker_and_candles_agree_with_the_trades(desk: Desk) -> None:
    await _random_flow(desk, seed=7, orders=60)

    book = (await desk.client.get("/v1/markets/BPC-TUSD/orderbook")).json()
    assert {"bids": book["bids"], "asks": book["asks"]} == _writer_depth(desk.trading)
    assert book["symbol"] == "BPC/TUSD"
    assert book["sequence"] == book["nonce"] > 0
    assert [int(level[0]) for level in book["bids"]] == sorted(
        (int(level[0]) for level in book["bids"]), reverse=True
    )
    assert [int(level[0]) for level in book["asks"]] == sorted(int(level[0]) for level in book["asks"])
    top = (await desk.client.get("/v1/markets/BPC-TUSD/orderbook", params={"limit": 2})).json()
    assert (top["bids"], top["asks"]) == (book["bids"][:2], book["asks"][:2])

    trades = await _all_trades(desk)
    assert trades, "the random flow should trade"
    assert [int(t["id"]) for t in trades] == sorted((int(t["id"]) for t in trades), reverse=True)
    for trade in trades:
        assert int(trade["cost"]) == int(trade["amount"]) * int(trade["price"]) // PRICE_SCALE_BASE
        assert trade["side"] in ("buy", "sell")
        assert set(trade) == {
            "id",
            "market",
            "symbol",
            "side",
            "price",
            "amount",
            "cost",
            "timestamp",
            "datetime",
        }

    ticker = (await desk.client.get("/v1/markets/BPC-TUSD/ticker")).json()
    _assert_ticker_of(ticker, trades)
    best_bid = desk.trading.markets["BPC-TUSD"].writer.book.best_bid()
    assert best_bid is not None
    assert ticker["bid"] == str(best_bid.price_ticks * TICK)
    assert ticker["bid_volume"] == str(best_bid.amount_base)

    for timeframe in TIMEFRAMES:
        reply = await desk.client.get("/v1/markets/BPC-TUSD/ohlcv", params={"timeframe": timeframe})
        assert reply.status_code == 200, reply.text
        assert reply.json()["candles"] == _expected_candles(timeframe, trades), timeframe
    latest = await desk.client.get(
        "/v1/markets/BPC-TUSD/ohlcv", params={"since": 253_402_300_799_999, "timeframe": "1M"}
    )
    assert latest.json()["candles"] == []
    first_ms = _expected_candles("1m", trades)[0][0]
    since = (
        await desk.client.get("/v1/markets/BPC-TUSD/ohlcv", params={"since": first_ms, "limit": 1})
    ).json()
    assert since["candles"] == _expected_candles("1m", trades)[:1]


async def _ohlcv(desk: Desk, **params: Any) -> list[list[Any]]:
    reply = await desk.client.get("/v1/markets/BPC-TUSD/ohlcv", params=params)
    assert reply.status_code == 200, reply.text
    candles: list[list[Any]] = reply.json()["candles"]
    return candles


async def _paged(desk: Desk, timeframe: str, pages: int) -> list[list[Any]]:
    """CCXT's loop: one candle a page, each asked from the last timestamp + 1, until none come."""
    candles: list[list[Any]] = []
    since = 0
    for _ in range(pages):
        page = await _ohlcv(desk, timeframe=timeframe, since=since, limit=1)
        if not page:
            return candles
        candles.extend(page)
        since = page[-1][0] + 1
    raise AssertionError(f"still answering after {pages} pages: {candles}")


async def test_since_answers_the_candles_opening_at_or_after_it(desk: Desk) -> None:
    await _random_flow(desk, seed=17, orders=40)
    trades = await _all_trades(desk)
    assert trades, "the random flow should trade"
    for timeframe in TIMEFRAMES:
        expected = _expected_candles(timeframe, trades)
        opened = expected[0][0]  # T: the first candle's open time, Unix ms
        assert await _ohlcv(desk, timeframe=timeframe, since=opened) == expected, timeframe
        assert await _ohlcv(desk, timeframe=timeframe, since=opened + 1) == expected[1:], timeframe
        assert await _paged(desk, timeframe, pages=len(expected) + 1) == expected, timeframe


async def _stored_candles(service: TradingService) -> list[tuple[Any, ...]]:
    async with service.sessionmaker() as session:
        rows = await session.scalars(
            select(TradingCandle).order_by(TradingCandle.resolution_s, TradingCandle.start_unix)
        )
        return [
            (c.resolution_s, c.start_unix, c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades)
            for c in rows.all()
        ]


async def _public_record(desk: Desk) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    ticker = (await desk.client.get("/v1/markets/BPC-TUSD/ticker")).json()
    candles = {}
    for timeframe in TIMEFRAMES:
        reply = await desk.client.get("/v1/markets/BPC-TUSD/ohlcv", params={"timeframe": timeframe})
        assert reply.status_code == 200, reply.text
        candles[timeframe] = reply.json()["candles"]
    return await _all_trades(desk), ticker, candles


async def test_fills_that_fail_settlement_leave_the_trades_candles_and_ticker(desk: Desk) -> None:
    await _random_flow(desk, seed=5, orders=60)
    trades, ticker, _ = await _public_record(desk)  # the ticker is cached now
    assert len(trades) >= 6, "the random flow should trade"
    stored = await _stored_candles(desk.trading)
    by_id = sorted(trades, key=lambda t: int(t["id"]))
    highest = max(by_id, key=lambda t: int(t["price"]))
    rng = random.Random(5)
    voided = {by_id[0]["id"], by_id[-1]["id"], highest["id"], *(t["id"] for t in rng.sample(by_id, 3))}
    await desk.fail_fills([int(trade_id) for trade_id in voided], settler_here=True)

    survivors = [trade for trade in trades if trade["id"] not in voided]
    after, ticker, candles = await _public_record(desk)
    assert after == survivors
    _assert_ticker_of(ticker, survivors)
    for timeframe, got in candles.items():
        assert got == _expected_candles(timeframe, survivors), timeframe
    first_ms = _expected_candles("1m", survivors)[0][0]
    since = (
        await desk.client.get("/v1/markets/BPC-TUSD/ohlcv", params={"since": first_ms, "limit": 1})
    ).json()
    assert since["candles"] == _expected_candles("1m", survivors)[:1]
    # The stored candles stay as matched: reads correct them.
    assert await _stored_candles(desk.trading) == stored

    # Both clocks stand still from here: the window read now is the one the next read reuses.
    tickers = desk.trading.tickers
    moment, wall = tickers.clock(), tickers.wall()
    tickers.clock, tickers.wall = (lambda: moment), (lambda: wall)
    ticker = (await desk.client.get("/v1/markets/BPC-TUSD/ticker")).json()
    assert ticker["trades"] == len(survivors)
    if desk.trading.fill_notices is not None:
        await desk.trading.fill_notices.stop()  # no notice heard (PostgreSQL): the ticker counts, as below
    await desk.fail_fills([int(trade["id"]) for trade in survivors], settler_here=False)
    after, ticker, candles = await _public_record(desk)
    assert ticker["trades"] == len(survivors)  # the cached window, until it counts the failed fills again
    tickers.clock = lambda: moment + VOIDS_RECHECK_S
    ticker = (await desk.client.get("/v1/markets/BPC-TUSD/ticker")).json()
    assert after == []
    assert (ticker["last"], ticker["open"], ticker["base_volume"], ticker["trades"]) == (None, None, "0", 0)
    assert all(got == [] for got in candles.values()), candles


async def test_candles_over_days_are_rebuilt_without_the_failed_fills(
    settings: Settings, chain_runtime: ChainRuntime
) -> None:
    async for desk in start_desk(settings, chain_runtime):
        await _random_flow(desk, seed=13, orders=60)
        # One fill every 37 minutes from 21:05 on: the trades span minutes, hours and three days.
        async with desk.trading.sessionmaker() as session, session.begin():
            fills = (await session.scalars(select(TradingFill).order_by(TradingFill.id))).all()
            for index, fill in enumerate(fills):
                fill.created_at = datetime(2026, 11, 1, 21, 5, tzinfo=UTC) + timedelta(minutes=37 * index)
    assert len(fills) >= 8, "the random flow should trade"
    # The stored candles rebuilt from the moved fills, by the migration that introduced them.
    config = alembic_config(settings.database_url)
    await asyncio.to_thread(command.downgrade, config, "482ca70abf99")
    await asyncio.to_thread(command.upgrade, config, "head")

    async for desk in start_desk(settings, chain_runtime):
        trades = await _all_trades(desk)
        rng = random.Random(13)
        voided = {trade["id"] for trade in rng.sample(trades, len(trades) // 3)}
        await desk.fail_fills([int(trade_id) for trade_id in voided], settler_here=True)
        survivors = [trade for trade in trades if trade["id"] not in voided]
        assert await _all_trades(desk) == survivors
        for timeframe in TIMEFRAMES:
            expected = _expected_candles(timeframe, survivors)
            assert await _ohlcv(desk, timeframe=timeframe) == expected, timeframe
            opened = expected[0][0]
            assert await _ohlcv(desk, timeframe=timeframe, since=opened) == expected, timeframe
            assert await _ohlcv(desk, timeframe=timeframe, since=opened + 1) == expected[1:], timeframe
            # Paged as CCXT does, one candle at a time: each comes once, and the loop ends.
            assert await _paged(desk, timeframe, pages=len(expected) + 1) == expected, timeframe
            # The latest n, for every n: as many as asked for, though some stored ones held only failed fills.
            for count in range(1, len(expected) + 1):
                latest = await _ohlcv(desk, timeframe=timeframe, limit=count)
                assert latest == expected[-count:], (timeframe, count)


async def test_stored_candles_survive_a_restart_and_the_migration_rebuilds_them(
    settings: Settings, chain_runtime: ChainRuntime
) -> None:
    async for desk in start_desk(settings, chain_runtime):
        await _random_flow(desk, seed=11, orders=40)
        stored = await _stored_candles(desk.trading)
        book_before = (await desk.client.get("/v1/markets/BPC-TUSD/orderbook")).json()
        hourly = (await desk.client.get("/v1/markets/BPC-TUSD/ohlcv", params={"timeframe": "1h"})).json()
    assert stored

    # Rebuilding the candles from the fills (what the migration does for older databases) gives the same rows.
    config = alembic_config(settings.database_url)
    await asyncio.to_thread(command.downgrade, config, "482ca70abf99")
    await asyncio.to_thread(command.upgrade, config, "head")

    async for again in start_desk(settings, chain_runtime):
        assert await _stored_candles(again.trading) == stored
        book_after = (await again.client.get("/v1/markets/BPC-TUSD/orderbook")).json()
        assert (book_after["bids"], book_after["asks"]) == (book_before["bids"], book_before["asks"])
        assert book_after["sequence"] >= book_before["sequence"]
        reply = await again.client.get("/v1/markets/BPC-TUSD/ohlcv", params={"timeframe": "1h"})
        assert reply.json() == hourly


async def test_an_empty_market_answers_without_trades(desk: Desk) -> None:
    book = (await desk.client.get("/v1/markets/BPC-TUSD/orderbook")).json()
    assert (book["bids"], book["asks"]) == ([], [])
    ticker = (await desk.client.get("/v1/markets/BPC-TUSD/ticker")).json()
    assert (ticker["last"], ticker["open"], ticker["bid"]) == (None, None, None)
    assert (ticker["base_volume"], ticker["trades"]) == ("0", 0)
    assert (await desk.client.get("/v1/markets/BPC-TUSD/ohlcv")).json()["candles"] == []
    assert (await desk.client.get("/v1/markets/BPC-TUSD/trades")).json() == {"items": [], "next_cursor": None}


async def test_bad_market_data_requests_are_refused_with_problems(desk: Desk) -> None:
    cases = [
        ("/v1/markets/NOPE-X/orderbook", {}, 404),
        ("/v1/markets/BPC-TUSD/orderbook", {"limit": 0}, 422),
        ("/v1/markets/BPC-TUSD/ohlcv", {"timeframe": "7m"}, 422),
        ("/v1/markets/BPC-TUSD/ohlcv", {"limit": 1001}, 422),
        ("/v1/markets/BPC-TUSD/ohlcv", {"since": -1}, 422),
        ("/v1/markets/BPC-TUSD/ohlcv", {"since": 253_402_300_800_000, "timeframe": "1M"}, 422),
        ("/v1/markets/BPC-TUSD/trades", {"cursor": "abc"}, 422),
        ("/v1/markets/BPC-TUSD/ticker", {"window": "1h"}, 422),
    ]
    for path, params, status in cases:
        reply = await desk.client.get(path, params=params)
        assert reply.status_code == status, (path, params, reply.text)
        assert reply.headers["content-type"].startswith("application/problem+json")
        assert reply.json()["status"] == status
