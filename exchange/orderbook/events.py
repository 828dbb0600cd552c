"""Events: everything a command did, in the order it happened.

``OrderBook.apply`` returns, for one command: the order events (``Accepted``
or ``Rejected``, ``Amended``, ``Trade``, ``Cancelled``) in the order they
happened, then one ``LevelChanged`` for every price level the command changed,
in the order the levels were first touched, carrying the level's final
aggregate (``amount_base == 0`` means the level is gone). Applying the
``LevelChanged`` events to a copy of the L2 book keeps it equal to the book's.

A ``Rejected`` command changed nothing. An order that is ``Accepted`` and
neither fully filled nor ``Cancelled`` by the same command rests in the book.
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar

from exchange.orderbook.market import SelfTradePrevention, Side, TimeInForce


class RejectReason(Enum):
    INVALID_ORDER_ID = "invalid_order_id"  # not a positive int
    ORDER_ID_NOT_INCREASING = "order_id_not_increasing"  # duplicate or replayed id
    INVALID_ACCOUNT = "invalid_account"
    INVALID_SIDE = "invalid_side"
    PRICE_NOT_POSITIVE_INTEGER = "price_not_positive_integer"
    AMOUNT_NOT_POSITIVE_INTEGER = "amount_not_positive_integer"
    AMOUNT_NOT_LOT_MULTIPLE = "amount_not_lot_multiple"
    AMOUNT_BELOW_MINIMUM = "amount_below_minimum"
    QUOTE_BUDGET_NOT_POSITIVE_INTEGER = "quote_budget_not_positive_integer"
    MARKET_ORDER_SIZE = "market_order_size"  # not exactly one size, or a budget sell
    TIME_IN_FORCE_NOT_ALLOWED = "time_in_force_not_allowed"
    INVALID_SELF_TRADE_PREVENTION = "invalid_self_trade_prevention"
    WOULD_TAKE = "would_take"  # post-only order (or its amend) would cross
    ORDER_NOT_FOUND = "order_not_found"
    NOT_ORDER_OWNER = "not_order_owner"
    AMEND_NO_CHANGE = "amend_no_change"


class CancelReason(Enum):
    USER = "user"  # Cancel or CancelAll
    IOC_REMAINDER = "ioc_remainder"  # IOC or market order: what could not fill now
    SELF_TRADE = "self_trade"  # self-trade prevention
    FOK = "fok"  # fill-or-kill could not fill completely


class _Record:
    """Value semantics (equality, repr) for the event classes below.

    Events are plain classes with ``__slots__`` and an explicit ``__init__``
    rather than dataclasses because they are built on every command: this is
    as fast as CPython allows and lets mypyc compile them to native structs.
    Treat them as immutable.
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, name) == getattr(other, name) for name in self._fields
        )

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({values})"

    __hash__ = None  # type: ignore[assignment]


class Accepted(_Record):
    _fields: ClassVar[tuple[str, ...]] = (
        "order_id",
        "account",
        "side",
        "price_ticks",
        "amount_base",
        "quote_budget",
        "time_in_force",
        "self_trade",
    )

    def __init__(
        self,
        order_id: int,
        account: str,
        side: Side,
        price_ticks: int | None,  # None for market orders
        amount_base: int | None,  # None for a budget market buy
        quote_budget: int | None,
        time_in_force: TimeInForce,
        self_trade: SelfTradePrevention,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price_ticks = price_ticks
        self.amount_base = amount_base
        self.quote_budget = quote_budget
        self.time_in_force = time_in_force
        self.self_trade = self_trade


class Rejected(_Record):
    _fields: ClassVar[tuple[str, ...]] = ("order_id", "account", "reason")

    def __init__(self, order_id: int | None, account: str, reason: RejectReason) -> None:
        # order_id is None for CancelAll or when the id itself is invalid.
        self.order_id = order_id
        self.account = account
        self.reason = reason


class Trade(_Record):
    _fields: ClassVar[tuple[str, ...]] = (
        "trade_id",
        "maker_order_id",
        "maker_account",
        "taker_order_id",
        "taker_account",
        "taker_side",
        "price_ticks",
        "amount_base",
        "quote_amount",
    )

    def __init__(
        self,
        trade_id: int,
        maker_order_id: int,
        maker_account: str,
        taker_order_id: int,
        taker_account: str,
        taker_side: Side,
        price_ticks: int,  # always the maker's price
        amount_base: int,
        quote_amount: int,
    ) -> None:
        self.trade_id = trade_id
        self.maker_order_id = maker_order_id
        self.maker_account = maker_account
        self.taker_order_id = taker_order_id
        self.taker_account = taker_account
        self.taker_side = taker_side
        self.price_ticks = price_ticks
        self.amount_base = amount_base
        self.quote_amount = quote_amount


class Cancelled(_Record):
    _fields: ClassVar[tuple[str, ...]] = (
        "order_id",
        "account",
        "side",
        "reason",
        "amount_base",
        "unspent_quote",
    )

    def __init__(
        self,
        order_id: int,
        account: str,
        side: Side,
        reason: CancelReason,
        amount_base: int,  # open amount removed from the order
        unspent_quote: int = 0,  # budget market buys only
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.reason = reason
        self.amount_base = amount_base
        self.unspent_quote = unspent_quote


class Amended(_Record):
    _fields: ClassVar[tuple[str, ...]] = (
        "order_id",
        "account",
        "side",
        "price_ticks",
        "amount_base",
        "priority_kept",
    )

    def __init__(
        self,
        order_id: int,
        account: str,
        side: Side,
        price_ticks: int,
        amount_base: int,  # the new remaining amount
        priority_kept: bool,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price_ticks = price_ticks
        self.amount_base = amount_base
        self.priority_kept = priority_kept


class LevelChanged(_Record):
    _fields: ClassVar[tuple[str, ...]] = ("side", "price_ticks", "amount_base", "order_count")

    def __init__(self, side: Side, price_ticks: int, amount_base: int, order_count: int) -> None:
        self.side = side
        self.price_ticks = price_ticks
        self.amount_base = amount_base  # 0: the level is gone
        self.order_count = order_count


Event = Accepted | Rejected | Trade | Cancelled | Amended | LevelChanged
