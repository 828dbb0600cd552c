"""Snapshot, restore and state hash of a book.

The canonical encoding is compact JSON with sorted keys holding only strings
and integers: the market configuration, the last order and trade ids, and the
resting orders of each side, best level first and oldest order first. Two
books that behave the same from now on encode to the same bytes, so
``state_hash`` (SHA-256 of the encoding) identifies the state, and restoring a
snapshot gives a book whose hash, queries and future events equal the original's.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from exchange.orderbook.levels import BookSide, OrderNode
from exchange.orderbook.market import (
    MarketConfig,
    SelfTradePrevention,
    Side,
    TimeInForce,
)

if TYPE_CHECKING:
    from exchange.orderbook.book import OrderBook

FORMAT = "exchange.orderbook/1"


class SnapshotError(ValueError):
    """The bytes are not a snapshot this version can restore."""


def _side_orders(side: BookSide) -> list[list[int | str]]:
    return [
        [
            node.order_id,
            node.account,
            node.price_ticks,
            node.original_base,
            node.filled_base,
            node.remaining_base,
            node.cancelled_base,
            node.time_in_force.value,
            node.self_trade.value,
        ]
        for level in side.best_first()
        for node in level.orders()
    ]


def encode(book: OrderBook) -> bytes:
    market = book.market
    document = {
        "format": FORMAT,
        "market": {
            "market_id": market.market_id,
            "base_asset": market.base_asset,
            "quote_asset": market.quote_asset,
            "tick_size_quote": market.tick_size_quote,
            "lot_size_base": market.lot_size_base,
            "min_amount_base": market.min_amount_base,
            "price_scale_base": market.price_scale_base,
        },
        "last_order_id": book.last_order_id,
        "last_trade_id": book.last_trade_id,
        "bids": _side_orders(book.bids),
        "asks": _side_orders(book.asks),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def state_hash(book: OrderBook) -> bytes:
    return hashlib.sha256(encode(book)).digest()


def decode(data: bytes) -> OrderBook:
    from exchange.orderbook.book import OrderBook

    try:
        document: Any = json.loads(data)
        if document["format"] != FORMAT:
            raise SnapshotError(f"unknown snapshot format {document['format']!r}")
        book = OrderBook(MarketConfig(**document["market"]))
        book.last_order_id = _integer(document["last_order_id"])
        book.last_trade_id = _integer(document["last_trade_id"])
        for side, key in ((Side.BUY, "bids"), (Side.SELL, "asks")):
            book_side = book.bids if side is Side.BUY else book.asks
            for row in document[key]:
                (
                    order_id,
                    account,
                    price_ticks,
                    original,
                    filled,
                    remaining,
                    cancelled,
                    tif,
                    rule,
                ) = row
                if type(account) is not str or not account:
                    raise SnapshotError(f"order {order_id} has no valid account")
                node = OrderNode(
                    _integer(order_id),
                    account,
                    side,
                    _integer(price_ticks),
                    _integer(original),
                    TimeInForce(tif),
                    SelfTradePrevention(rule),
                )
                node.filled_base = _integer(filled)
                node.remaining_base = _integer(remaining)
                node.cancelled_base = _integer(cancelled)
                if node.remaining_base <= 0 or filled + remaining + cancelled != original:
                    raise SnapshotError(f"order {order_id} has inconsistent amounts")
                if node.order_id in book.orders or node.order_id > book.last_order_id:
                    raise SnapshotError(f"order id {order_id} is duplicated or above the last id")
                book.orders[node.order_id] = node
                book.accounts.setdefault(node.account, {})[node.order_id] = node
                book_side.level_at(node.price_ticks).append(node)
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise SnapshotError(f"not a valid order book snapshot: {error}") from error
    # Account indexes must list orders oldest first, as a live book does.
    for account, own in book.accounts.items():
        book.accounts[account] = dict(sorted(own.items()))
    _check_not_crossed(book)
    return book


def _integer(value: object) -> int:
    if type(value) is not int:
        raise SnapshotError(f"expected an integer, got {value!r}")
    return value


def _check_not_crossed(book: OrderBook) -> None:
    best_bid = book.bids.best()
    best_ask = book.asks.best()
    if best_bid is not None and best_ask is not None and best_bid.price_ticks >= best_ask.price_ticks:
        raise SnapshotError("snapshot book is crossed")
