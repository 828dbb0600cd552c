"""OHLCV candles: the stored resolutions, bucket arithmetic, and merging trades into candles.

The market's writer keeps three resolutions up to date in the same transaction as
the fills (``trading_candles``): one minute, one hour and one day. Every other
timeframe a client asks for is built from the nearest stored one that divides
it (5m from 1m, 4h from 1h, 1w and 1M from 1d), so a request reads at most
31 stored rows per candle. Buckets are UTC: minutes, hours and days from the
Unix epoch, weeks starting on Monday, months on the first day of the month.

Prices are the Vault's (quote base units per 10**18 base units) and volumes are
base units (``volume``) and quote units (``quote_volume``), all exact integers.
A bucket without trades has no candle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

MINUTE = 60
HOUR = 3600
DAY = 86_400
WEEK = 7 * DAY
_MONDAY_OFFSET = 4 * DAY  # 1970-01-01 was a Thursday; the first Monday was 1970-01-05

STORED = (MINUTE, HOUR, DAY)  # resolutions the writer keeps, in seconds

# Timeframe name -> (seconds, the stored resolution it is built from). "1M" is a calendar month.
TIMEFRAMES: dict[str, tuple[int, int]] = {
    "1m": (MINUTE, MINUTE),
    "3m": (3 * MINUTE, MINUTE),
    "5m": (5 * MINUTE, MINUTE),
    "15m": (15 * MINUTE, MINUTE),
    "30m": (30 * MINUTE, MINUTE),
    "1h": (HOUR, HOUR),
    "2h": (2 * HOUR, HOUR),
    "4h": (4 * HOUR, HOUR),
    "6h": (6 * HOUR, HOUR),
    "8h": (8 * HOUR, HOUR),
    "12h": (12 * HOUR, HOUR),
    "1d": (DAY, DAY),
    "3d": (3 * DAY, DAY),
    "1w": (WEEK, DAY),
    "1M": (0, DAY),
}


@dataclass(frozen=True, slots=True)
class Candle:
    """One bucket's trades: first, highest, lowest and last price, volumes and trade count."""

    start: int  # Unix seconds of the bucket's start
    open: int
    high: int
    low: int
    close: int
    volume: int  # base units
    quote_volume: int
    trades: int

    def merge(self, later: Candle) -> Candle:
        """This candle followed by ``later`` (trades after all of this one's), keeping this start."""
        # The constructor rather than dataclasses.replace: the writer merges on every cycle.
        return Candle(
            self.start,
            self.open,
            max(self.high, later.high),
            min(self.low, later.low),
            later.close,
            self.volume + later.volume,
            self.quote_volume + later.quote_volume,
            self.trades + later.trades,
        )


def bucket_start(timeframe: str, unix_s: int) -> int:
    """The start (Unix seconds) of the ``timeframe`` bucket that holds ``unix_s``."""
    seconds = TIMEFRAMES[timeframe][0]
    if timeframe == "1M":
        moment = datetime.fromtimestamp(unix_s, UTC)
        return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp())
    if timeframe == "1w":
        return unix_s - (unix_s - _MONDAY_OFFSET) % WEEK
    return unix_s - unix_s % seconds


def stored_bucket(resolution: int, unix_s: int) -> int:
    return unix_s - unix_s % resolution


def next_bucket(timeframe: str, start: int) -> int:
    """The start of the bucket after the one starting at ``start``."""
    if timeframe == "1M":
        moment = datetime.fromtimestamp(start, UTC)
        year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
        return int(datetime(year, month, 1, tzinfo=UTC).timestamp())
    return start + TIMEFRAMES[timeframe][0]


def trade_candles(resolution: int, trades: Iterable[tuple[int, int, int, int]]) -> dict[int, Candle]:
    """Candles at ``resolution`` of ``trades`` = (unix_s, price, amount, quote) in trade order."""
    # One running [open, high, low, close, volume, quote volume, trades] per bucket, and one
    # Candle per bucket at the end: the writer folds every cycle's fills at each resolution.
    running: dict[int, list[int]] = {}
    for unix_s, price, amount, quote in trades:
        start = unix_s - unix_s % resolution  # stored_bucket, inline: once per fill and resolution
        bucket = running.get(start)
        if bucket is None:
            running[start] = [price, price, price, price, amount, quote, 1]
            continue
        if price > bucket[1]:
            bucket[1] = price
        elif price < bucket[2]:
            bucket[2] = price
        bucket[3] = price
        bucket[4] += amount
        bucket[5] += quote
        bucket[6] += 1
    return {start: Candle(start, *bucket) for start, bucket in running.items()}


def roll_up(timeframe: str, stored: Iterable[Candle]) -> list[Candle]:
    """Stored candles (oldest first, at the timeframe's source resolution) grouped into ``timeframe``."""
    result: list[Candle] = []
    for candle in stored:
        start = bucket_start(timeframe, candle.start)
        if result and result[-1].start == start:
            result[-1] = result[-1].merge(candle)
        else:
            result.append(replace(candle, start=start))
    return result
