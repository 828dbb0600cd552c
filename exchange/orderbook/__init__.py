"""Pure, deterministic limit order book for BPC markets.

Commands in, events out: build an :class:`OrderBook` for a :class:`MarketConfig`,
feed it commands with :meth:`OrderBook.apply`, read its queries, and persist it
with :meth:`OrderBook.snapshot` / :meth:`OrderBook.restore`. No I/O, no clock.
"""

from exchange.orderbook.book import OrderBook
from exchange.orderbook.commands import (
    Amend,
    Cancel,
    CancelAll,
    Command,
    PlaceLimit,
    PlaceMarket,
)
from exchange.orderbook.events import (
    Accepted,
    Amended,
    Cancelled,
    CancelReason,
    Event,
    LevelChanged,
    Rejected,
    RejectReason,
    Trade,
)
from exchange.orderbook.market import (
    MarketConfig,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from exchange.orderbook.snapshot import SnapshotError
from exchange.orderbook.views import Depth, LevelView, OrderView

__all__ = [
    "Accepted",
    "Amend",
    "Amended",
    "Cancel",
    "CancelAll",
    "CancelReason",
    "Cancelled",
    "Command",
    "Depth",
    "Event",
    "LevelChanged",
    "LevelView",
    "MarketConfig",
    "OrderBook",
    "OrderView",
    "PlaceLimit",
    "PlaceMarket",
    "RejectReason",
    "Rejected",
    "SelfTradePrevention",
    "Side",
    "SnapshotError",
    "TimeInForce",
    "Trade",
]
