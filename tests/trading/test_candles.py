"""Candles: bucket arithmetic and roll-ups equal to aggregating the trades directly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.trading.candles import (
    STORED,
    TIMEFRAMES,
    Candle,
    bucket_start,
    next_bucket,
    roll_up,
    trade_candles,
)

# Trades as (unix seconds, price, amount, quote), in trade order (time never goes back).
_times = st.lists(st.integers(0, 40 * 86_400 * 31), min_size=1, max_size=60).map(sorted)
_trades = _times.flatmap(
    lambda times: st.tuples(
        *(
            st.tuples(st.just(t), st.integers(1, 10**12), st.integers(1, 10**24), st.integers(0, 10**30))
            for t in times
        )
    ).map(list)
)


def _direct(timeframe: str, trades: list[tuple[int, int, int, int]]) -> list[Candle]:
    """The reference: each timeframe bucket's trades gathered, then first, max, min, last and sums
    (neither stored resolutions nor ``Candle.merge``)."""
    buckets: dict[int, list[tuple[int, int, int, int]]] = {}
    for trade in trades:
        buckets.setdefault(bucket_start(timeframe, trade[0]), []).append(trade)
    return [
        Candle(
            start,
            buckets[start][0][1],
            max(price for _, price, _, _ in buckets[start]),
            min(price for _, price, _, _ in buckets[start]),
            buckets[start][-1][1],
            sum(amount for _, _, amount, _ in buckets[start]),
            sum(quote for _, _, _, quote in buckets[start]),
            len(buckets[start]),
        )
        for start in sorted(buckets)
    ]


@pytest.mark.parametrize("timeframe", sorted(TIMEFRAMES))
@settings(max_examples=60, deadline=None)
@given(trades=_trades)
def test_rolling_up_stored_candles_equals_aggregating_the_trades(
    timeframe: str, trades: list[tuple[int, int, int, int]]
) -> None:
    resolution = TIMEFRAMES[timeframe][1]
    assert resolution in STORED
    stored = trade_candles(resolution, trades)
    rolled = roll_up(timeframe, [stored[start] for start in sorted(stored)])
    assert rolled == _direct(timeframe, trades)
    assert sum(c.volume for c in rolled) == sum(t[2] for t in trades)
    assert sum(c.trades for c in rolled) == len(trades)


@pytest.mark.parametrize("timeframe", sorted(TIMEFRAMES))
@given(unix_s=st.integers(0, 4_102_444_800))
def test_a_moment_lies_in_its_bucket_and_buckets_tile_time(timeframe: str, unix_s: int) -> None:
    start = bucket_start(timeframe, unix_s)
    end = next_bucket(timeframe, start)
    assert start <= unix_s < end
    assert bucket_start(timeframe, start) == start
    assert bucket_start(timeframe, end) == end
    # Every bucket of a timeframe lies inside one bucket of its stored source resolution's multiples.
    assert start % TIMEFRAMES[timeframe][1] == 0


def test_weeks_start_on_monday_and_months_on_the_first() -> None:
    moment = int(datetime(2026, 11, 22, 15, 30, tzinfo=UTC).timestamp())  # a Sunday
    week = datetime.fromtimestamp(bucket_start("1w", moment), UTC)
    assert (week.year, week.month, week.day, week.hour) == (2026, 11, 16, 0)
    assert week.weekday() == 0
    month = datetime.fromtimestamp(bucket_start("1M", moment), UTC)
    assert (month.month, month.day) == (11, 1)
    december = datetime.fromtimestamp(next_bucket("1M", bucket_start("1M", moment)), UTC)
    assert (december.year, december.month, december.day) == (2026, 12, 1)
    january = datetime.fromtimestamp(next_bucket("1M", int(december.timestamp())), UTC)
    assert (january.year, january.month) == (2027, 1)


def test_merge_keeps_the_first_open_and_the_last_close() -> None:
    first = Candle(60, 10, 12, 9, 11, 5, 50, 2)
    later = Candle(120, 8, 15, 8, 14, 1, 14, 1)
    merged = first.merge(later)
    assert merged == Candle(60, 10, 15, 8, 14, 6, 64, 3)
