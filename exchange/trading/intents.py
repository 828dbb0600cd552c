"""What requests hand a market's writer, and what they get back.

An intent carries a future the writer resolves after the cycle that handled it
has committed: with an ``OrderRow`` copy (place, replace), whether the order was open
(cancel), the ids cancelled (cancel all), or the journal head (probe); or with a
domain error when the command was refused. ``OrderRow`` mirrors a
``trading_orders`` row; the writer keeps the rows of resting orders in memory.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from exchange.kit.errors import Conflict, DomainError
from exchange.orderbook import CancelReason
from exchange.trading.intake import CheckedOrder
from exchange.trading.models import CancelCause, TradingOrder


class WriterUnavailable(DomainError):
    status = 503
    type_slug = "trading-unavailable"
    title = "Trading temporarily unavailable"


class OrderFailed(DomainError):
    """One order of a batch met an unexpected error (logged with its traceback); the others stand."""

    status = 500
    type_slug = "order-failed"
    title = "Internal server error"


class OrderConflict(Conflict):
    """The order clashes with one already placed (client order id, nonce or signed order reused)."""

    type_slug = "order-conflict"
    title = "Order conflicts with an existing order"


class PostOnlyWouldTake(Conflict):
    type_slug = "post-only-would-take"
    title = "Post-only order would take liquidity"


class OrderNotOpen(Conflict):
    """The order to replace has ended (filled, cancelled or expired): nothing was replaced or placed."""

    type_slug = "order-not-open"
    title = "Order no longer open"


# --------------------------------------------------------------------------- order rows


@dataclass(slots=True)
class OrderRow:
    """An order's row, mutable while the writer owns it; field names are ``TradingOrder``'s columns."""

    id: int | None
    market_id: str
    sequence: int
    account: str
    client_order_id: str
    side: str
    price_quote: int
    amount_base: int
    max_fee_bps: int
    nonce: int
    expiry_unix: int
    order_hash: str
    signature: str
    time_in_force: str
    status: str
    filled_base: int
    remaining_base: int
    reserved_token: str
    reserved_amount: int
    cancel_cause: str | None
    cost_quote: int
    fee_quote: int
    last_trade_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, model: TradingOrder) -> OrderRow:
        return cls(**{name: getattr(model, name) for name in ORDER_FIELDS})

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ORDER_FIELDS}

    @property
    def is_buy(self) -> bool:
        return self.side == "buy"


ORDER_FIELDS = tuple(f.name for f in fields(OrderRow))
ORDER_STATE_FIELDS = (
    "filled_base",
    "remaining_base",
    "reserved_amount",
    "status",
    "cancel_cause",
    "cost_quote",
    "fee_quote",
    "last_trade_at",
    "updated_at",
)

# --------------------------------------------------------------------------- intents


@dataclass(frozen=True)
class Placed:
    """The outcome of placing: the order, and whether this request created it (False: a resend)."""

    order: OrderRow
    created: bool


@dataclass(eq=False)
class PlaceIntent:
    order: CheckedOrder
    future: asyncio.Future[Placed] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(eq=False)
class ReplaceIntent:
    """Cancel one open order of ``account`` (by its sequence) and place ``order`` in its stead, in
    one cycle, or neither. Resolves as a place does; with ``OrderNotOpen`` when the order ended."""

    account: str
    order_sequence: int
    order: CheckedOrder
    future: asyncio.Future[Placed] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(eq=False)
class CancelIntent:
    """Cancel one order (by its sequence in the book) of ``account``. Resolves to whether it was open."""

    account: str
    order_sequence: int
    cause: CancelCause = CancelCause.USER
    future: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(eq=False)
class CancelAllIntent:
    """Cancel every open order of ``account``. Resolves to the ids of the orders cancelled."""

    account: str
    cause: CancelCause = CancelCause.USER
    future: asyncio.Future[list[int]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(frozen=True)
class JournalHead:
    market_id: str
    sequence: int
    state_hash: str
    open_orders: int


@dataclass(eq=False)
class ProbeIntent:
    """Resolves, after the cycle's commit, to the committed journal head and the book's state hash."""

    future: asyncio.Future[JournalHead] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


Intent = PlaceIntent | ReplaceIntent | CancelIntent | CancelAllIntent | ProbeIntent
STOP = object()

CANCEL_CAUSES = {
    CancelReason.IOC_REMAINDER: CancelCause.IOC_REMAINDER,
    CancelReason.FOK: CancelCause.IOC_REMAINDER,
    CancelReason.SELF_TRADE: CancelCause.SELF_TRADE,
}


def settled(outcome: object) -> object:
    """What a request receives: copies of rows (the writer goes on changing its own), ids of lists."""
    if isinstance(outcome, Placed):
        return Placed(copy.copy(outcome.order), outcome.created)
    if isinstance(outcome, list):
        return [row.id for row in outcome]
    return outcome


def resolve(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the request may have gone away; the work is done all the same
        future.set_result(result)


def fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
        future.exception()  # retrieved here, so an abandoned request logs no "never retrieved"
