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

from dataclasses import dataclass
from enum import Enum

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


@dataclass(slots=True)
class Accepted:
    order_id: int
    account: str
    side: Side
    price_ticks: int | None  # None for market orders
    amount_base: int | None  # None for a budget market buy
    quote_budget: int | None
    time_in_force: TimeInForce
    self_trade: SelfTradePrevention


@dataclass(slots=True)
class Rejected:
    order_id: int | None  # None for CancelAll or when the id itself is invalid
    account: str
    reason: RejectReason


@dataclass(slots=True)
class Trade:
    trade_id: int
    maker_order_id: int
    maker_account: str
    taker_order_id: int
    taker_account: str
    taker_side: Side
    price_ticks: int  # always the maker's price
    amount_base: int
    quote_amount: int


@dataclass(slots=True)
class Cancelled:
    order_id: int
    account: str
    side: Side
    reason: CancelReason
    amount_base: int  # open amount removed from the order
    unspent_quote: int = 0  # budget market buys only


@dataclass(slots=True)
class Amended:
    order_id: int
    account: str
    side: Side
    price_ticks: int
    amount_base: int  # new remaining amount
    priority_kept: bool


@dataclass(slots=True)
class LevelChanged:
    side: Side
    price_ticks: int
    amount_base: int  # 0: the level is gone
    order_count: int


Event = Accepted | Rejected | Trade | Cancelled | Amended | LevelChanged
