"""Read-only views returned by book queries; copies, never live state."""

from __future__ import annotations

from dataclasses import dataclass

from exchange.orderbook.market import SelfTradePrevention, Side, TimeInForce


@dataclass(frozen=True, slots=True)
class OrderView:
    """A resting order. Always ``filled + remaining + cancelled == original``."""

    order_id: int
    account: str
    side: Side
    price_ticks: int
    original_base: int
    filled_base: int
    remaining_base: int
    cancelled_base: int
    time_in_force: TimeInForce
    self_trade: SelfTradePrevention


@dataclass(frozen=True, slots=True)
class LevelView:
    price_ticks: int
    amount_base: int
    order_count: int


@dataclass(frozen=True, slots=True)
class Depth:
    """Aggregated levels, best first on each side."""

    bids: list[LevelView]
    asks: list[LevelView]
