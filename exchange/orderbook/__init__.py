"""Pure, deterministic limit order book for BPC markets.

Commands in, events out: build an :class:`OrderBook` for a :class:`MarketConfig`,
feed it commands with :meth:`OrderBook.apply`, read its queries, and persist it
with :meth:`OrderBook.snapshot` / :meth:`OrderBook.restore`. No I/O, no clock.

    book = OrderBook(market)
    events = book.apply(PlaceLimit(order_id, account, Side.BUY, price_ticks, amount_base))
    book.best_bid(), book.best_ask(), book.depth(10), book.level_orders(side, price_ticks)
    book.order(order_id), book.open_orders(account), book.state_hash()
    OrderBook.restore(book.snapshot())

Errors
    A command a user can get wrong never raises: it returns one ``Rejected``
    event with a ``RejectReason`` and leaves the book unchanged. What raises is a
    programming or storage fault: ``ValueError`` for an invalid ``MarketConfig``,
    ``TypeError`` for an object that is not a command, ``SnapshotError`` (a
    ``ValueError``) for bytes that are not a consistent snapshot.

The invariants (priority, amend, ids, rounding) are stated in ``book``.
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
