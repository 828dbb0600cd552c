"""Market configuration and the small vocabularies shared by commands and events.

A market trades a base token against a quote token. Prices are integer ticks and
amounts are integer base units; there is no float anywhere in the book.

* ``tick_size_quote`` is the quote value of one tick for ``price_scale_base`` base
  units (for an 18-decimal token, ``price_scale_base = 10**18`` prices one whole
  token).
* Every amount is a multiple of ``lot_size_base`` and at least ``min_amount_base``.
* The configuration is rejected unless one lot at one tick is a whole number of
  quote units, so the quote value of any fill is exact: nothing ever rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Side(Enum):
    BUY = "buy"
    SELL = "sell"


class TimeInForce(Enum):
    """How long an order may live.

    GTC rests until filled or cancelled; IOC takes what it can and cancels the
    rest; FOK fills completely or leaves no trace but its cancellation;
    POST_ONLY rests and is rejected if any part of it would take.
    """

    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"
    POST_ONLY = "post_only"


class SelfTradePrevention(Enum):
    """What happens when a taker meets a resting order of its own account.

    Chosen by the taker. EXPIRE_MAKER cancels the resting order and matching
    goes on; EXPIRE_TAKER cancels the rest of the taker and leaves the resting
    order; EXPIRE_BOTH cancels both.
    """

    EXPIRE_TAKER = "expire_taker"
    EXPIRE_MAKER = "expire_maker"
    EXPIRE_BOTH = "expire_both"


@dataclass(frozen=True, slots=True)
class MarketConfig:
    """Static rules of one market; invalid configurations raise ``ValueError``."""

    market_id: str
    base_asset: str
    quote_asset: str
    tick_size_quote: int
    lot_size_base: int
    min_amount_base: int
    price_scale_base: int = 1

    def __post_init__(self) -> None:
        for name in ("market_id", "base_asset", "quote_asset"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
        for name in (
            "tick_size_quote",
            "lot_size_base",
            "min_amount_base",
            "price_scale_base",
        ):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ValueError(f"{name} must be a positive integer")
        if self.min_amount_base % self.lot_size_base:
            raise ValueError("min_amount_base must be a multiple of lot_size_base")
        if (self.tick_size_quote * self.lot_size_base) % self.price_scale_base:
            raise ValueError(
                "one lot at one tick must be a whole number of quote units "
                "(tick_size_quote * lot_size_base divisible by price_scale_base)"
            )

    @property
    def quote_per_lot_tick(self) -> int:
        """Quote units paid for one lot at a price of one tick (exact)."""
        return self.tick_size_quote * self.lot_size_base // self.price_scale_base

    def quote_amount(self, price_ticks: int, amount_base: int) -> int:
        """Exact quote value of ``amount_base`` (a lot multiple) at ``price_ticks``."""
        return price_ticks * (amount_base // self.lot_size_base) * self.quote_per_lot_tick
