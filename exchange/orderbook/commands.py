"""Commands: the only way to change a book.

Commands are plain values, so a journal of them can be replayed to rebuild a
book exactly. Order ids are positive ``int`` chosen by the caller and strictly
increasing per book (the trading service takes them from its journal
sequence); accounts are non-empty strings such as checksummed addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.orderbook.market import SelfTradePrevention, Side, TimeInForce


@dataclass(slots=True)
class PlaceLimit:
    """A limit order: GTC, IOC, FOK or POST_ONLY at ``price_ticks``."""

    order_id: int
    account: str
    side: Side
    price_ticks: int
    amount_base: int
    time_in_force: TimeInForce = TimeInForce.GTC
    self_trade: SelfTradePrevention = SelfTradePrevention.EXPIRE_MAKER


@dataclass(slots=True)
class PlaceMarket:
    """A market order, sized by ``amount_base`` or, for a buy, by ``quote_budget``.

    Exactly one of the two sizes is given. Market orders never rest: IOC
    cancels what cannot fill now; FOK (base-sized only) fills fully or not at all.
    A budget buy takes whole lots while the remaining budget pays for one at
    the best ask, and reports what it did not spend.
    """

    order_id: int
    account: str
    side: Side
    amount_base: int | None = None
    quote_budget: int | None = None
    time_in_force: TimeInForce = TimeInForce.IOC
    self_trade: SelfTradePrevention = SelfTradePrevention.EXPIRE_MAKER


@dataclass(slots=True)
class Cancel:
    """Cancel one resting order of ``account``."""

    order_id: int
    account: str


@dataclass(slots=True)
class Amend:
    """Change the price and/or the open amount of a resting order.

    ``amount_base`` is the new *remaining* amount. Lowering it at the same price
    keeps time priority; a new price or a larger amount sends the order to the
    back of its (new) level. A new price that crosses the book trades at once,
    with the order's own self-trade rule.
    """

    order_id: int
    account: str
    price_ticks: int | None = None
    amount_base: int | None = None


@dataclass(slots=True)
class CancelAll:
    """Cancel every resting order of ``account`` in this market, oldest first."""

    account: str


Command = PlaceLimit | PlaceMarket | Cancel | Amend | CancelAll
