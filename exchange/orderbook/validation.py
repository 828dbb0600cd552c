"""Checks that decide whether a command is rejected, and with which reason.

Values are checked by exact type as well as range: a float price or a bool
amount is rejected, never rounded or coerced.
"""

from __future__ import annotations

from typing import Final

from exchange.orderbook.events import Rejected, RejectReason
from exchange.orderbook.market import SelfTradePrevention, Side

_SIDES: Final[tuple[Side, ...]] = (Side.BUY, Side.SELL)
_SELF_TRADE_RULES: Final[tuple[SelfTradePrevention, ...]] = tuple(SelfTradePrevention)


def is_order_id(order_id: object) -> bool:
    return type(order_id) is int and order_id > 0


def new_order_problem(
    order_id: int, account: str, side: Side, self_trade: SelfTradePrevention, last_order_id: int
) -> RejectReason | None:
    """What is wrong with the identity of a new order, if anything."""
    if not is_order_id(order_id):
        return RejectReason.INVALID_ORDER_ID
    if order_id <= last_order_id:
        return RejectReason.ORDER_ID_NOT_INCREASING
    if type(account) is not str or not account:
        return RejectReason.INVALID_ACCOUNT
    if side not in _SIDES:
        return RejectReason.INVALID_SIDE
    if self_trade not in _SELF_TRADE_RULES:
        return RejectReason.INVALID_SELF_TRADE_PREVENTION
    return None


def amount_problem(amount_base: int, lot_size_base: int, min_amount_base: int) -> RejectReason | None:
    if type(amount_base) is not int or amount_base <= 0:
        return RejectReason.AMOUNT_NOT_POSITIVE_INTEGER
    if amount_base % lot_size_base:
        return RejectReason.AMOUNT_NOT_LOT_MULTIPLE
    if amount_base < min_amount_base:
        return RejectReason.AMOUNT_BELOW_MINIMUM
    return None


def rejected(order_id: object, account: object, reason: RejectReason) -> Rejected:
    """The rejection event, carrying the id and account only when they are valid values."""
    return Rejected(
        order_id if type(order_id) is int and order_id > 0 else None,
        account if type(account) is str else "",
        reason,
    )
