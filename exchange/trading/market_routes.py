"""Public market data: ``/v1/markets/{id}/orderbook``, ``/trades``, ``/ticker`` and ``/ohlcv``.

Shapes follow CCXT's unified structures. No sign-in; each request takes a token
from the client IP's bucket like every other route. The live stream of the same
data is the WebSocket at ``/v1/ws`` (``exchange.trading.ws``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from exchange.api.problems import problem_responses
from exchange.db.session import DbSession
from exchange.kit.errors import RateLimited, ValidationFailed
from exchange.trading import market_data
from exchange.trading.intents import WriterUnavailable
from exchange.trading.routes import Cursor, Trading, known_query_only, limit_ip
from exchange.trading.schemas import (
    OhlcvOut,
    OrderBookOut,
    PublicTradePage,
    TickerOut,
    Timeframe,
)
from exchange.trading.service import UnknownMarket
from exchange.trading.views import iso

router = APIRouter(
    prefix="/v1/markets", tags=["market data"], dependencies=[Depends(limit_ip), Depends(known_query_only)]
)
MarketPath = Annotated[
    str,
    Path(
        max_length=32,
        description="Market id (BPC-TUSD). The symbol (BPC/TUSD) names a market in query parameters and"
        " bodies; its slash cannot be part of a path segment.",
    ),
]
LATEST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last moment a datetime holds
_REFUSALS = problem_responses(UnknownMarket, RateLimited, ValidationFailed)
# The book is this process's: once its market's writer stopped here, it is not served (503).
_BOOK_REFUSALS = problem_responses(UnknownMarket, RateLimited, ValidationFailed, WriterUnavailable)


@router.get(
    "/{market_id}/orderbook",
    response_model=OrderBookOut,
    summary="The committed order book (L2): price levels of both sides, best first",
    responses=_BOOK_REFUSALS,
)
async def get_order_book(
    market_id: MarketPath,
    service: Trading,
    limit: Annotated[
        int | None, Query(ge=1, le=5000, description="Levels per side; all when absent.")
    ] = None,
) -> OrderBookOut:
    feed = service.market(market_id).feed
    feed.check_live()
    bids, asks = feed.depth(limit)
    moment = feed.updated_at
    return OrderBookOut(
        market=feed.spec.market_id,
        symbol=feed.spec.symbol,
        bids=[(price, amount, orders) for price, amount, orders in bids],
        asks=[(price, amount, orders) for price, amount, orders in asks],
        sequence=feed.sequence,
        nonce=feed.sequence,
        timestamp=None if moment is None else int(moment.timestamp() * 1000),
        datetime=None if moment is None else iso(moment),
    )


@router.get(
    "/{market_id}/trades",
    response_model=PublicTradePage,
    summary="The market's trades, newest first",
    responses=_REFUSALS,
)
async def list_trades(
    market_id: MarketPath,
    service: Trading,
    session: DbSession,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PublicTradePage:
    feed = service.market(market_id).feed
    trades = await market_data.recent_trades(
        session, feed, before_id=int(cursor) if cursor else None, limit=limit
    )
    return PublicTradePage(items=trades, next_cursor=trades[-1].id if len(trades) == limit else None)


@router.get(
    "/{market_id}/ticker",
    response_model=TickerOut,
    summary="24-hour statistics with the best bid and ask",
    responses=_BOOK_REFUSALS,
)
async def get_ticker(market_id: MarketPath, service: Trading, session: DbSession) -> TickerOut:
    feed = service.market(market_id).feed
    feed.check_live()  # its best bid and ask are the book's
    return await service.tickers.ticker(session, feed)


@router.get(
    "/{market_id}/ohlcv",
    response_model=OhlcvOut,
    summary="OHLCV candles, oldest first",
    responses=_REFUSALS,
)
async def get_ohlcv(
    market_id: MarketPath,
    service: Trading,
    session: DbSession,
    timeframe: Annotated[Timeframe, Query(description="Candle length; 1M is a calendar month.")] = "1m",
    since: Annotated[
        int | None,
        Query(
            ge=0,
            le=LATEST_MS,
            description=(
                "Unix ms: the candles whose open time is at or after this moment (CCXT's since: "
                "ask again with the last timestamp + 1 for the next ones); the latest when absent."
            ),
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> OhlcvOut:
    feed = service.market(market_id).feed
    return await market_data.candles(session, feed, timeframe, since_ms=since, limit=limit)
