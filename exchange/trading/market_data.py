"""Public market data read from the database: recent trades, candles and the 24-hour ticker.

The book itself comes from the market's feed (``exchange.trading.feed``), which
holds the committed L2 levels in memory. Trades are ``trading_fills`` rows;
candles are the writer's stored resolutions rolled up by ``exchange.trading.candles``.

A fill that fails settlement for good (``failed``: the Vault refused it, so the
trade never happened on chain and its ledger postings were voided) leaves the
public record: it is not listed among the trades, and the candles and the ticker
are what they would be without it. The stored candles stay as the writer made
them ("as matched"); reads correct them. Every stored candle whose bucket holds a
failed fill is rebuilt: a minute from its surviving fills, an hour or a day from
its (corrected) minutes; a bucket left without trades has no candle. Failed fills
are rare, and the correction costs one indexed query when there are none.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.orderbook import Side
from exchange.trading.amounts import PRICE_SCALE_BASE
from exchange.trading.candles import (
    DAY,
    MINUTE,
    TIMEFRAMES,
    Candle,
    bucket_start,
    next_bucket,
    roll_up,
    stored_bucket,
    trade_candles,
)
from exchange.trading.feed import MarketFeed
from exchange.trading.models import SettlementState, TradingCandle, TradingFill
from exchange.trading.schemas import OhlcvOut, PublicTradeOut, TickerOut
from exchange.trading.views import iso, public_trade

MAX_ROWS_PER_CANDLE = 31  # a calendar month of daily candles
_FAILED = SettlementState.FAILED.value


def public_trade_out(fill: TradingFill, feed: MarketFeed) -> PublicTradeOut:
    return PublicTradeOut.model_validate(public_trade(feed.spec, fill.id, fill))


async def recent_trades(
    session: AsyncSession, feed: MarketFeed, *, before_id: int | None, limit: int
) -> list[PublicTradeOut]:
    """The market's trades, newest first."""
    statement = select(TradingFill).where(
        TradingFill.market_id == feed.spec.market_id, TradingFill.settlement_state != _FAILED
    )
    if before_id is not None:
        statement = statement.where(TradingFill.id < before_id)
    fills = (await session.scalars(statement.order_by(TradingFill.id.desc()).limit(limit))).all()
    return [public_trade_out(fill, feed) for fill in fills]


def _candle(row: TradingCandle) -> Candle:
    return Candle(
        row.start_unix, row.open, row.high, row.low, row.close, row.volume, row.quote_volume, row.trades
    )


async def _stored(
    session: AsyncSession,
    market_id: str,
    resolution: int,
    *,
    since: int | None = None,
    until: int | None = None,
    newest_first: bool = False,
    limit: int,
) -> list[Candle]:
    """The stored candles as the writer made them (voided trades included)."""
    statement = select(TradingCandle).where(
        TradingCandle.market_id == market_id, TradingCandle.resolution_s == resolution
    )
    if since is not None:
        statement = statement.where(TradingCandle.start_unix >= since)
    if until is not None:
        statement = statement.where(TradingCandle.start_unix < until)
    order = TradingCandle.start_unix.desc() if newest_first else TradingCandle.start_unix
    rows = (await session.scalars(statement.order_by(order).limit(limit))).all()
    return [_candle(row) for row in rows]


def _moment(unix_s: int) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


async def _voided_minutes(session: AsyncSession, market_id: str, first: int, end: int) -> list[int]:
    """The minute buckets in ``[first, end)`` (Unix seconds) that hold a failed fill, in order."""
    times = await session.scalars(
        select(TradingFill.created_at).where(
            TradingFill.settlement_state == _FAILED,
            TradingFill.market_id == market_id,
            TradingFill.created_at >= _moment(first),
            TradingFill.created_at < _moment(end),
        )
    )
    return sorted({stored_bucket(MINUTE, int(moment.timestamp())) for moment in times})


def _in_buckets(
    column: Any, starts: Sequence[int], length: int, value: Callable[[int], Any] = _moment
) -> ColumnElement[bool]:
    """``column`` falls in one of the buckets ``[start, start + length)`` (Unix seconds, as ``value``)."""
    return or_(*(and_(column >= value(s), column < value(s + length)) for s in starts))


async def _minutes_of_fills(
    session: AsyncSession, market_id: str, minutes: Sequence[int]
) -> dict[int, Candle | None]:
    """Each of ``minutes`` rebuilt from its fills that did not fail (None: none left)."""
    rebuilt: dict[int, Candle | None] = dict.fromkeys(minutes)
    for chunk in _chunks(minutes):
        rows = await session.execute(
            select(
                TradingFill.created_at,
                TradingFill.price_quote,
                TradingFill.amount_base,
                TradingFill.quote_amount,
            )
            .where(
                TradingFill.market_id == market_id,
                TradingFill.settlement_state != _FAILED,
                _in_buckets(TradingFill.created_at, chunk, MINUTE),
            )
            .order_by(TradingFill.id)
        )
        trades = ((int(moment.timestamp()), price, amount, quote) for moment, price, amount, quote in rows)
        rebuilt.update(trade_candles(MINUTE, trades))
    return rebuilt


async def _stored_minutes(
    session: AsyncSession, market_id: str, buckets: Sequence[int], resolution: int
) -> list[Candle]:
    """The stored minute candles inside the ``resolution`` buckets starting at ``buckets``, oldest first."""
    found: list[Candle] = []
    for chunk in _chunks(buckets):
        rows = await session.scalars(
            select(TradingCandle).where(
                TradingCandle.market_id == market_id,
                TradingCandle.resolution_s == MINUTE,
                _in_buckets(TradingCandle.start_unix, chunk, resolution, int),
            )
        )
        found.extend(_candle(row) for row in rows)
    return sorted(found, key=lambda candle: candle.start)


def _chunks(values: Sequence[int], size: int = 200) -> list[Sequence[int]]:
    return [values[index : index + size] for index in range(0, len(values), size)]


async def without_voided(
    session: AsyncSession, market_id: str, resolution: int, stored: list[Candle]
) -> list[Candle]:
    """``stored`` candles (in any order) as if no failed fill had traded; see the module docstring.

    A handful of queries whatever the number of failed fills: the failed minutes, their
    surviving fills, and (for hours and days) the stored minutes of the buckets they fall in.
    """
    if not stored:
        return stored
    first = min(candle.start for candle in stored)
    end = max(candle.start for candle in stored) + resolution
    voided = await _voided_minutes(session, market_id, first, end)
    if not voided:
        return stored

    def hit(candle: Candle) -> bool:  # a failed minute inside the candle's bucket
        index = bisect_left(voided, candle.start)
        return index < len(voided) and voided[index] < candle.start + resolution

    affected = [candle for candle in stored if hit(candle)]
    minutes = await _minutes_of_fills(session, market_id, voided)
    fixed: dict[int, Candle | None] = {}
    if resolution == MINUTE:
        fixed = {candle.start: minutes[candle.start] for candle in affected}
    else:
        buckets = sorted(candle.start for candle in affected)
        for part in await _stored_minutes(session, market_id, buckets, resolution):
            bucket = stored_bucket(resolution, part.start)
            kept = minutes.get(part.start, part)  # None: the minute lost all its trades
            if kept is not None:
                known = fixed.get(bucket)
                fixed[bucket] = replace(kept, start=bucket) if known is None else known.merge(kept)
    corrected: list[Candle] = []
    for candle in stored:
        if not hit(candle):
            corrected.append(candle)
        elif (replacement := fixed.get(candle.start)) is not None:
            corrected.append(replacement)
    return corrected


async def voided_fills(session: AsyncSession, market_id: str) -> int:
    """How many of the market's fills failed (a count that only grows: failing is final)."""
    count = await session.scalar(
        select(func.count()).where(
            TradingFill.settlement_state == _FAILED, TradingFill.market_id == market_id
        )
    )
    return int(count or 0)


def _first_bucket_from(timeframe: str, since_ms: int) -> int | None:
    """The start (Unix seconds) of the first ``timeframe`` bucket opening at or after ``since_ms``.

    None when that bucket would open after 9999-12-31, the last day a datetime holds.
    """
    start = bucket_start(timeframe, since_ms // 1000)
    if start * 1000 >= since_ms:
        return start
    try:
        return next_bucket(timeframe, start)
    except ValueError:  # the month after December 9999
        return None


async def candles(
    session: AsyncSession, feed: MarketFeed, timeframe: str, *, since_ms: int | None, limit: int
) -> OhlcvOut:
    """Up to ``limit`` candles of ``timeframe``: those opening at or after ``since_ms``, else the latest.

    ``since_ms`` is CCXT's ``since``: a client that asks again from its last candle's
    timestamp + 1 gets the candles after it, never that one again.
    """
    if since_ms is not None:
        since = _first_bucket_from(timeframe, since_ms)
        chosen = [] if since is None else await _oldest_from(session, feed, timeframe, since, limit)
    else:
        chosen = await _newest(session, feed, timeframe, limit)
    return OhlcvOut(
        market=feed.spec.market_id,
        symbol=feed.spec.symbol,
        timeframe=timeframe,  # type: ignore[arg-type]  # a key of TIMEFRAMES
        candles=[
            (c.start * 1000, str(c.open), str(c.high), str(c.low), str(c.close), str(c.volume))
            for c in chosen
        ],
    )


def _rows_per_read(timeframe: str, limit: int) -> int:
    """Stored rows read at a time for ``limit`` candles: at least two candles' worth, so a read
    whose last candle may be cut short still holds a whole one before it."""
    seconds, resolution = TIMEFRAMES[timeframe]
    per_candle = MAX_ROWS_PER_CANDLE if timeframe == "1M" else seconds // resolution
    return (limit + 1) * per_candle


async def _oldest_from(
    session: AsyncSession, feed: MarketFeed, timeframe: str, since: int, limit: int
) -> list[Candle]:
    """The first ``limit`` candles opening at or after ``since``.

    Candles made only of failed fills are gone once the fills are taken out, so a read of
    stored rows may give fewer candles than asked: reading goes on from the last candle it
    may have cut short, until ``limit`` candles or the last stored row.
    """
    resolution = TIMEFRAMES[timeframe][1]
    cap = _rows_per_read(timeframe, limit)
    chosen: list[Candle] = []
    while True:
        rows = await _stored(session, feed.spec.market_id, resolution, since=since, limit=cap)
        rolled = roll_up(timeframe, await without_voided(session, feed.spec.market_id, resolution, rows))
        if len(rows) < cap:  # every stored row from `since` on was read
            return (chosen + rolled)[:limit]
        since = bucket_start(timeframe, rows[-1].start)  # that candle may lack its later rows
        chosen += [candle for candle in rolled if candle.start < since]
        if len(chosen) >= limit:
            return chosen[:limit]


async def _newest(session: AsyncSession, feed: MarketFeed, timeframe: str, limit: int) -> list[Candle]:
    """The latest ``limit`` candles, oldest first; read backwards as :func:`_oldest_from` reads on."""
    resolution = TIMEFRAMES[timeframe][1]
    cap = _rows_per_read(timeframe, limit)
    chosen: list[Candle] = []
    until: int | None = None
    while True:
        rows = await _stored(
            session, feed.spec.market_id, resolution, until=until, newest_first=True, limit=cap
        )
        kept = await without_voided(session, feed.spec.market_id, resolution, rows)
        rolled = roll_up(timeframe, reversed(kept))
        if len(rows) < cap:  # every stored row before `until` was read
            return (rolled + chosen)[-limit:]
        oldest = bucket_start(timeframe, rows[-1].start)  # that candle may lack its earlier rows
        chosen = [candle for candle in rolled if candle.start > oldest] + chosen
        if len(chosen) >= limit:
            return chosen[-limit:]
        until = next_bucket(timeframe, oldest)


VOIDS_RECHECK_S = 5.0
"""How long a ticker trusts its count of failed fills when its own feed reported none."""


@dataclass(frozen=True, slots=True)
class _Window:
    """The trade statistics of a ticker window (without the live book)."""

    minute: int
    last_trade_id: int | None
    feed_voids: int  # the feed's count of voids when the window was computed
    voided: int  # the database's count of failed fills then
    checked_at: float  # monotonic time of the last count
    summary: Candle | None
    last: int | None


class TickerCache:
    """The last window per market, reused while the minute, the last trade and the voids stay the same.

    A fill failed by the settler of this process reaches the feed at once (``MarketFeed.voided``);
    one failed by a settler elsewhere (``exchange settle``) is noticed through the count of
    failed fills, read again once the window's count is ``VOIDS_RECHECK_S`` old.

    ``clock`` (monotonic seconds) ages the count; ``wall`` is the time the ticker reports and whose
    minute keys the window.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._windows: dict[str, _Window] = {}
        self.clock = clock
        self.wall = wall

    async def ticker(self, session: AsyncSession, feed: MarketFeed) -> TickerOut:
        market_id = feed.spec.market_id
        now = self.wall()
        minute = stored_bucket(MINUTE, int(now.timestamp()))
        window = self._windows.get(market_id)
        checked_at = self.clock()
        if (
            window is None
            or window.minute != minute
            or window.last_trade_id != feed.last_trade_id
            or window.feed_voids != feed.voids
        ):
            window = await self._window(session, feed, minute, checked_at)
        elif checked_at - window.checked_at >= VOIDS_RECHECK_S:
            voided = await voided_fills(session, market_id)
            if voided == window.voided:
                window = replace(window, checked_at=checked_at)
            else:
                window = await self._window(session, feed, minute, checked_at, voided)
        self._windows[market_id] = window
        return _ticker(feed, now, window)

    @staticmethod
    async def _window(
        session: AsyncSession, feed: MarketFeed, minute: int, checked_at: float, voided: int | None = None
    ) -> _Window:
        last_trade_id, feed_voids = feed.last_trade_id, feed.voids
        market_id = feed.spec.market_id
        if voided is None:
            voided = await voided_fills(session, market_id)
        first = minute - DAY + MINUTE
        rows = await _stored(session, market_id, MINUTE, since=first, limit=DAY // MINUTE)
        summary = None
        for row in await without_voided(session, market_id, MINUTE, rows):
            summary = row if summary is None else summary.merge(row)
        if summary is not None:
            last: int | None = summary.close
        else:
            last = await session.scalar(
                select(TradingFill.price_quote)
                .where(TradingFill.market_id == market_id, TradingFill.settlement_state != _FAILED)
                .order_by(TradingFill.id.desc())
                .limit(1)
            )
        return _Window(minute, last_trade_id, feed_voids, voided, checked_at, summary, last)


_PERCENT_DIGITS = 100  # a uint256 has 78 digits; times 100, to two places


def _percentage(change: int, open_: int) -> str:
    """``change`` in percent of ``open_``, to two places (uint256 prices: more digits than the
    default context's 28, which made ``quantize`` fail on a large ratio)."""
    with localcontext(prec=_PERCENT_DIGITS):
        return str((Decimal(change) * 100 / Decimal(open_)).quantize(Decimal("0.01"), ROUND_HALF_EVEN))


def _ticker(feed: MarketFeed, now: datetime, window: _Window) -> TickerOut:
    bid = feed.best(Side.BUY)
    ask = feed.best(Side.SELL)
    stats: dict[str, str | None] = dict.fromkeys(
        ("high", "low", "vwap", "open", "close", "change", "percentage", "average")
    )
    s = window.summary
    if s is not None:
        stats.update(
            high=str(s.high),
            low=str(s.low),
            vwap=str(s.quote_volume * PRICE_SCALE_BASE // s.volume),
            open=str(s.open),
            close=str(s.close),
            change=str(s.close - s.open),
            percentage=_percentage(s.close - s.open, s.open),
            average=str((s.open + s.close) // 2),
        )
    return TickerOut(
        market=feed.spec.market_id,
        symbol=feed.spec.symbol,
        timestamp=int(now.timestamp() * 1000),
        datetime=iso(now),
        bid=None if bid is None else str(bid[0]),
        bid_volume=None if bid is None else str(bid[1]),
        ask=None if ask is None else str(ask[0]),
        ask_volume=None if ask is None else str(ask[1]),
        last=None if window.last is None else str(window.last),
        base_volume=str(s.volume if s else 0),
        quote_volume=str(s.quote_volume if s else 0),
        trades=s.trades if s else 0,
        **stats,
    )
