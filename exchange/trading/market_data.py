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

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.orderbook import Side
from exchange.trading.amounts import PRICE_SCALE_BASE
from exchange.trading.candles import (
    DAY,
    MINUTE,
    TIMEFRAMES,
    Candle,
    bucket_start,
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


async def _voided_minutes(session: AsyncSession, market_id: str, first: int, end: int) -> set[int]:
    """The minute buckets in ``[first, end)`` (Unix seconds) that hold a failed fill."""
    times = await session.scalars(
        select(TradingFill.created_at).where(
            TradingFill.settlement_state == _FAILED,
            TradingFill.market_id == market_id,
            TradingFill.created_at >= _moment(first),
            TradingFill.created_at < _moment(end),
        )
    )
    return {stored_bucket(MINUTE, int(moment.timestamp())) for moment in times}


async def _minute_of_fills(session: AsyncSession, market_id: str, start: int) -> Candle | None:
    """The minute starting at ``start`` built from its fills that did not fail; None without any."""
    rows = await session.execute(
        select(TradingFill.price_quote, TradingFill.amount_base, TradingFill.quote_amount)
        .where(
            TradingFill.market_id == market_id,
            TradingFill.settlement_state != _FAILED,
            TradingFill.created_at >= _moment(start),
            TradingFill.created_at < _moment(start + MINUTE),
        )
        .order_by(TradingFill.id)
    )
    built = trade_candles(MINUTE, ((start, price, amount, quote) for price, amount, quote in rows))
    return built.get(start)


async def without_voided(
    session: AsyncSession, market_id: str, resolution: int, stored: list[Candle]
) -> list[Candle]:
    """``stored`` candles (in any order) as if no failed fill had traded; see the module docstring."""
    if not stored:
        return stored
    first = min(candle.start for candle in stored)
    end = max(candle.start for candle in stored) + resolution
    voided = await _voided_minutes(session, market_id, first, end)
    if not voided:
        return stored
    minutes = {start: await _minute_of_fills(session, market_id, start) for start in sorted(voided)}
    corrected: list[Candle] = []
    for candle in stored:
        bucket_end = candle.start + resolution
        if not any(candle.start <= start < bucket_end for start in minutes):
            corrected.append(candle)
            continue
        if resolution == MINUTE:
            fixed = minutes[candle.start]
        else:
            parts = await _stored(
                session, market_id, MINUTE, since=candle.start, until=bucket_end, limit=resolution // MINUTE
            )
            fixed = None
            for part in parts:
                kept = minutes.get(part.start, part)  # None: the minute lost all its trades
                if kept is not None:
                    fixed = kept if fixed is None else fixed.merge(kept)
            fixed = None if fixed is None else replace(fixed, start=candle.start)
        if fixed is not None:
            corrected.append(fixed)
    return corrected


async def voided_fills(session: AsyncSession, market_id: str) -> int:
    """How many of the market's fills failed (a count that only grows: failing is final)."""
    count = await session.scalar(
        select(func.count()).where(
            TradingFill.settlement_state == _FAILED, TradingFill.market_id == market_id
        )
    )
    return int(count or 0)


async def candles(
    session: AsyncSession, feed: MarketFeed, timeframe: str, *, since_ms: int | None, limit: int
) -> OhlcvOut:
    """Up to ``limit`` candles of ``timeframe``: from the bucket holding ``since_ms``, else the latest."""
    seconds, resolution = TIMEFRAMES[timeframe]
    per_candle = MAX_ROWS_PER_CANDLE if timeframe == "1M" else seconds // resolution
    cap = (limit + 1) * per_candle
    market_id = feed.spec.market_id
    if since_ms is not None:
        since = bucket_start(timeframe, since_ms // 1000)
        rows = await _stored(session, market_id, resolution, since=since, limit=cap)
        rolled = roll_up(timeframe, await without_voided(session, market_id, resolution, rows))
        if len(rows) == cap and per_candle > 1:
            rolled = rolled[:-1]  # the newest group may be cut short by the row limit
        chosen = rolled[:limit]
    else:
        rows = await _stored(session, market_id, resolution, newest_first=True, limit=cap)
        kept = await without_voided(session, market_id, resolution, rows)
        rolled = roll_up(timeframe, reversed(kept))
        if len(rows) == cap and per_candle > 1:
            rolled = rolled[1:]  # the oldest group may be cut short by the row limit
        chosen = rolled[-limit:]
    return OhlcvOut(
        market=market_id,
        symbol=feed.spec.symbol,
        timeframe=timeframe,  # type: ignore[arg-type]  # a key of TIMEFRAMES
        candles=[
            (c.start * 1000, str(c.open), str(c.high), str(c.low), str(c.close), str(c.volume))
            for c in chosen
        ],
    )


@dataclass(frozen=True, slots=True)
class _Window:
    """The trade statistics of a ticker window (without the live book)."""

    minute: int
    last_trade_id: int | None
    voided: int
    summary: Candle | None
    last: int | None


class TickerCache:
    """The last window per market, reused while the minute, the last trade and the voids stay the same.

    The count of failed fills is read on every request (one indexed query over the failed
    fills): a fill fails in the settler, which may run in another process than the market's feed.
    """

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}

    async def ticker(self, session: AsyncSession, feed: MarketFeed, now: datetime) -> TickerOut:
        market_id = feed.spec.market_id
        minute = stored_bucket(MINUTE, int(now.timestamp()))
        window = self._windows.get(market_id)
        voided = await voided_fills(session, market_id)
        if (
            window is None
            or window.minute != minute
            or window.last_trade_id != feed.last_trade_id
            or window.voided != voided
        ):
            window = await self._window(session, feed, minute, voided)
            self._windows[market_id] = window
        return _ticker(feed, now, window)

    @staticmethod
    async def _window(session: AsyncSession, feed: MarketFeed, minute: int, voided: int) -> _Window:
        last_trade_id = feed.last_trade_id
        market_id = feed.spec.market_id
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
        return _Window(minute, last_trade_id, voided, summary, last)


def _percentage(change: int, open_: int) -> str:
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
