"""Live market data: the committed L2 book of each market and what its cycles publish.

The market's writer reports every committed cycle (:class:`CycleReport`) to its
:class:`MarketFeed`, synchronously, right after the commit and before the next
cycle starts (after the cycle's requests got their outcomes, so that the
acknowledgements go out before the WebSocket frames, yet before any of those
requests runs on: a client holding its acknowledgement already finds the order
in what the feed serves). The feed keeps its own copy of the aggregated book (price level →
amount, order count), so what it serves is always what is durable: the writer's
in-memory book runs ahead of the database while a cycle is being written, the
feed never does. After a recovery the writer hands the feed its rebuilt book
(:meth:`MarketFeed.reset`) and every book subscriber gets a fresh snapshot.

Sequence numbers. A book message carries the journal ``sequence`` of the last
command that changed the book, and an update also the ``prev_sequence`` of the
update before it. A client applies an update whose ``prev_sequence`` equals the
sequence it holds; anything else is a gap, and it subscribes again for a new
snapshot. The feed never skips a subscriber's message: a subscriber that cannot
keep up is disconnected (see ``exchange.trading.ws``).

Trades are chained the same way, on their own: an update carries the journal
``sequence`` of the cycle that matched it and the ``prev_sequence`` of the trades
update before it (cycles without trades publish none, so the two need not be
adjacent); subscribing answers the ``sequence`` the next update will follow. A
client that finds a gap (it missed messages, or the server restarted: the chain
begins again at 0) reads the trades it missed from ``GET /v1/markets/{market}/trades``.
Voids (below) are not chained.

Messages (JSON text; prices in Vault units, amounts in base units, as decimal strings)::

    {"channel": "book", "type": "snapshot", "market", "sequence", "bids": [[price, amount, orders]],
     "asks": [...], "timestamp", "timestamp_us"}
    {"channel": "book", "type": "update", "market", "sequence", "prev_sequence", "bids", "asks",
     "timestamp", "timestamp_us"}            # amount "0": the level is gone
    {"channel": "trades", "type": "update", "market", "sequence", "prev_sequence", "data": [public trade]}
    {"channel": "trades", "type": "void", "market", "data": [public trade]}   # failed settlement
    {"channel": "orders", "type": "update", "data": [order]}     # the signed-in account's only
    {"channel": "fills", "type": "update", "data": [own trade]}

``timestamp`` (ms) and ``timestamp_us`` are when the cycle that matched began; in a
snapshot, when the book last changed or, if later, when it was rebuilt (start, recovery).

A trade whose fill fails settlement for good (the Vault refused it: it never
happened on chain) is taken back with a ``void`` on the trades channel, and its
two parties get the fill again on their ``fills`` channel with
``settlement_state: "failed"``; a fill whose batch settles is sent to its two parties
again too, ``settled`` with its ``tx_hash`` (the public trades channel is not told). The
settler tells the feed when it runs in the same process as the market (``exchange
serve``); a settler run as its own process (``exchange settle``) is heard through
PostgreSQL's notifications (``exchange.trading.fill_notices``), and on SQLite, which has
none, clients learn it from REST.

A market whose writer stops for good in this process (another process took the
market, or a recovery failed) stops its feed (:meth:`MarketFeed.stopped`): the
book here no longer follows the journal, so none of it is served, and every
subscriber is dropped and told which of its channels ended (``exchange.trading.ws``
closes a connection that followed the market's book or trades, and only tells one
that followed its orders and fills, which span markets). The feed stays stopped for
the life of the process: nothing here starts a stopped writer again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from exchange.db.base import utc_now
from exchange.kit.errors import DomainError
from exchange.kit.logging import get_logger
from exchange.orderbook import OrderBook, Side
from exchange.trading.intents import OrderRow, WriterUnavailable
from exchange.trading.markets import MarketSpec
from exchange.trading.models import SettlementState, TradingFill
from exchange.trading.views import order_out, public_trade, trade_out

log = get_logger(__name__)

Level = tuple[int, int]  # (amount in base units, resting orders)


class Subscriber(Protocol):
    """A connection's outbox. ``offer`` never blocks; a subscriber too slow to keep up closes itself."""

    def offer(self, message: str) -> None: ...

    def end(self, feed: MarketFeed, channels: frozenset[str], error: DomainError) -> None:
        """``feed`` ended (its market's writer stopped) and dropped this subscriber from ``channels``,
        the ones it followed there: tell the client, and close if what it follows needs that."""
        ...


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one committed cycle of a market's writer changed."""

    sequence: int  # journal head after the cycle
    time: datetime  # when the cycle began (its fills' created_at)
    levels: dict[tuple[Side, int], Level]  # (side, price_ticks) -> level after the cycle; amount 0: gone
    fills: list[dict[str, Any]]  # trading_fills rows as written, with their ids
    orders: list[OrderRow]  # orders placed or changed by the cycle (copied out before the next one)


class CycleListener(Protocol):
    def committed(self, report: CycleReport) -> None: ...

    def reset(self, book: OrderBook, sequence: int) -> None: ...

    def stopped(self, error: WriterUnavailable) -> None: ...


def encode(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def _stamp(moment: datetime) -> dict[str, int]:
    micros = int(moment.timestamp() * 1_000_000)
    return {"timestamp": micros // 1000, "timestamp_us": micros}


class MarketFeed:
    """One market's committed L2 book and its subscribers; see the module docstring."""

    def __init__(self, spec: MarketSpec) -> None:
        self.spec = spec
        self.sequence = 0
        self.updated_at: datetime | None = None
        self.last_trade_id: int | None = None  # id of the last fill published since start
        self.trades = 0  # fills published since start
        self.trades_sequence = 0  # journal sequence of the last trades update since start
        self.voids = 0  # fills taken back (failed settlement) since start
        self._sides: dict[Side, dict[int, Level]] = {Side.BUY: {}, Side.SELL: {}}
        self._encoded_snapshot: str | None = None  # the book as it is now, once encoded
        self.book_subscribers: set[Subscriber] = set()
        self.trade_subscribers: set[Subscriber] = set()
        self.order_subscribers: dict[str, set[Subscriber]] = {}
        self.fill_subscribers: dict[str, set[Subscriber]] = {}
        # Why the market's writer stopped (its market taken by another process, a recovery that
        # failed): the book here no longer follows the journal, so nothing of it is served.
        self.stopped_by: WriterUnavailable | None = None

    def check_live(self) -> None:
        """Raise ``WriterUnavailable`` (503) once the writer stopped: the book would be stale."""
        if self.stopped_by is not None:
            raise self.stopped_by

    def stopped(self, error: WriterUnavailable) -> None:
        """The writer stopped for good in this process: the feed drops every subscriber and tells
        each which of its channels ended (the subscriber decides whether that closes it)."""
        self.stopped_by = error
        followed: dict[Subscriber, set[str]] = {}
        for channel, subscribers in (("book", self.book_subscribers), ("trades", self.trade_subscribers)):
            for subscriber in subscribers:
                followed.setdefault(subscriber, set()).add(channel)
        for channel, table in (("orders", self.order_subscribers), ("fills", self.fill_subscribers)):
            for members in table.values():
                for subscriber in members:
                    followed.setdefault(subscriber, set()).add(channel)
        self.book_subscribers.clear()
        self.trade_subscribers.clear()
        self.order_subscribers.clear()
        self.fill_subscribers.clear()
        for subscriber, channels in followed.items():
            subscriber.end(self, frozenset(channels), error)
        log.warning("feed.stopped", market=self.spec.market_id, subscribers=len(followed))

    # ------------------------------------------------------------------ the book

    def depth(self, limit: int | None = None) -> tuple[list[list[Any]], list[list[Any]]]:
        """Bids and asks, best first, as ``[price, amount, orders]`` (price and amount decimal strings)."""
        return self._levels(Side.BUY, limit), self._levels(Side.SELL, limit)

    def _levels(self, side: Side, limit: int | None) -> list[list[Any]]:
        levels = self._sides[side]
        prices = sorted(levels, reverse=side is Side.BUY)[:limit]
        tick = self.spec.tick_size_quote
        return [[str(price * tick), str(levels[price][0]), levels[price][1]] for price in prices]

    def best(self, side: Side) -> tuple[int, int] | None:
        """(price in Vault units, amount) of the best level of ``side``, if any."""
        levels = self._sides[side]
        if not levels:
            return None
        price = max(levels) if side is Side.BUY else min(levels)
        return price * self.spec.tick_size_quote, levels[price][0]

    def snapshot(self, limit: int | None = None) -> dict[str, Any]:
        bids, asks = self.depth(limit)
        message: dict[str, Any] = {
            "channel": "book",
            "type": "snapshot",
            "market": self.spec.market_id,
            "sequence": self.sequence,
            "bids": bids,
            "asks": asks,
        }
        if self.updated_at is not None:
            message.update(_stamp(self.updated_at))
        return message

    def encoded_snapshot(self) -> str:
        """The whole book's snapshot message, encoded once per state of the book.

        Every subscriber that joins or resyncs at one sequence is sent this one string: a
        deep book is sorted and encoded once, not once per subscribe, and the outboxes
        holding it share it.
        """
        if self._encoded_snapshot is None:
            self._encoded_snapshot = encode(self.snapshot())
        return self._encoded_snapshot

    # ------------------------------------------------------------------ from the writer

    def reset(self, book: OrderBook, sequence: int) -> None:
        """Take the (rebuilt) book as it is now and resend a snapshot to every book subscriber,
        stamped with the time of the reset (the book is known as it is now)."""
        depth = book.depth(len(book) + 1)
        self._sides = {
            Side.BUY: {level.price_ticks: (level.amount_base, level.order_count) for level in depth.bids},
            Side.SELL: {level.price_ticks: (level.amount_base, level.order_count) for level in depth.asks},
        }
        self.sequence, self.updated_at = sequence, utc_now()
        self._encoded_snapshot = None
        if self.book_subscribers:
            self._broadcast(self.book_subscribers, self.encoded_snapshot())

    def committed(self, report: CycleReport) -> None:
        stamp = _stamp(report.time)
        if report.levels:
            self._book_update(report, stamp)
        if report.fills:
            self.last_trade_id = report.fills[-1]["id"]
            self.trades += len(report.fills)
            previous, self.trades_sequence = self.trades_sequence, report.sequence
            if self.trade_subscribers:
                data = [public_trade(self.spec, fill["id"], fill) for fill in report.fills]
                message = {
                    "channel": "trades",
                    "type": "update",
                    "market": self.spec.market_id,
                    "sequence": report.sequence,
                    "prev_sequence": previous,
                    "data": data,
                }
                self._broadcast(self.trade_subscribers, encode(message))
            if self.fill_subscribers:
                self._own_fills(report.fills)
        if report.orders and self.order_subscribers:
            self._own_orders(report.orders)

    def _book_update(self, report: CycleReport, stamp: dict[str, int]) -> None:
        tick = self.spec.tick_size_quote
        changes: dict[Side, list[list[Any]]] = {Side.BUY: [], Side.SELL: []}
        for (side, price), (amount, orders) in report.levels.items():
            levels = self._sides[side]
            if amount:
                levels[price] = (amount, orders)
            else:
                levels.pop(price, None)
            changes[side].append([str(price * tick), str(amount), orders])
        previous, self.sequence, self.updated_at = self.sequence, report.sequence, report.time
        self._encoded_snapshot = None
        if not self.book_subscribers:
            return
        message = {
            "channel": "book",
            "type": "update",
            "market": self.spec.market_id,
            "sequence": report.sequence,
            "prev_sequence": previous,
            "bids": changes[Side.BUY],
            "asks": changes[Side.SELL],
            **stamp,
        }
        self._broadcast(self.book_subscribers, encode(message))

    def voided(self, fills: Sequence[TradingFill]) -> None:
        """Take back trades whose fills failed settlement for good (see the module docstring)."""
        self.voids += len(fills)
        if self.trade_subscribers:
            data = [public_trade(self.spec, fill.id, fill) for fill in fills]
            message = {"channel": "trades", "type": "void", "market": self.spec.market_id, "data": data}
            self._broadcast(self.trade_subscribers, encode(message))
        if self.fill_subscribers:
            self._own_fill_rows(fills)

    def settled(self, fills: Sequence[TradingFill]) -> None:
        """Fills of a batch that settled: each again to its accounts' ``fills`` subscribers."""
        if self.fill_subscribers:
            self._own_fill_rows(fills)

    def _own_fills(self, fills: list[dict[str, Any]]) -> None:
        self._own_fill_rows(
            [
                TradingFill(
                    **{
                        name: value
                        for name, value in fill.items()
                        if name not in ("maker_sequence", "taker_sequence")
                    },
                    settlement_state=SettlementState.PENDING.value,
                    tx_hash=None,
                )
                for fill in fills
                if self.fill_subscribers.keys() & {fill["maker_account"], fill["taker_account"]}
            ]
        )

    def _own_fill_rows(self, fills: Iterable[TradingFill]) -> None:
        by_account: dict[str, list[dict[str, Any]]] = {}
        for row in fills:
            for account in {row.maker_account, row.taker_account}:
                if account in self.fill_subscribers:
                    out = trade_out(row, account, self.spec).model_dump(mode="json")
                    by_account.setdefault(account, []).append(out)
        for account, data in by_account.items():
            message = encode({"channel": "fills", "type": "update", "data": data})
            self._broadcast(self.fill_subscribers.get(account, ()), message)

    def _own_orders(self, orders: Iterable[OrderRow]) -> None:
        by_account: dict[str, list[dict[str, Any]]] = {}
        for row in orders:
            if row.account in self.order_subscribers:
                by_account.setdefault(row.account, []).append(
                    order_out(row, self.spec).model_dump(mode="json")
                )
        for account, data in by_account.items():
            message = encode({"channel": "orders", "type": "update", "data": data})
            self._broadcast(self.order_subscribers.get(account, ()), message)

    @staticmethod
    def _broadcast(subscribers: Iterable[Subscriber], message: str) -> None:
        for subscriber in list(subscribers):
            subscriber.offer(message)

    # ------------------------------------------------------------------ subscriptions

    def add_private(self, table: dict[str, set[Subscriber]], account: str, subscriber: Subscriber) -> None:
        table.setdefault(account, set()).add(subscriber)

    def remove_private(self, table: dict[str, set[Subscriber]], account: str, subscriber: Subscriber) -> None:
        subscribers = table.get(account)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del table[account]

    def remove(self, subscriber: Subscriber) -> None:
        """Drop ``subscriber`` from every channel of this market."""
        self.book_subscribers.discard(subscriber)
        self.trade_subscribers.discard(subscriber)
        for table in (self.order_subscribers, self.fill_subscribers):
            for account in [account for account, subs in table.items() if subscriber in subs]:
                self.remove_private(table, account, subscriber)
