"""The Vault's price and fee arithmetic, to the base unit (mirror of ``LibOrder.sol``).

Pure integers; change this module and ``contracts/libraries/LibOrder.sol`` together.

Price convention: ``price_quote`` is the number of quote-token base units paid for
``PRICE_SCALE_BASE`` (10**18) base-token base units, i.e. for one whole BPC.

Rules of a fill of ``amount_base`` at ``price_quote``:

- ``quote = floor(amount_base * price_quote / 10**18)``: rounded down, so the
  payer never pays more than the price says; a fill whose quote rounds to zero
  is refused (``FillTooSmall``).
- Each side's fee is in the quote token. The fee rate ``fee_bps`` chosen by the
  operator must not exceed the order's signed cap, itself bounded by 100 %:
  ``cap_bps = min(max_fee_bps, 10_000)`` (``FeeAboveCap`` otherwise).
- ``fee = min(ceil(quote * fee_bps / 10_000), floor(quote * cap_bps / 10_000))``:
  rounded up in the Fund's favour, but never above the exact signed cap.
- The buyer pays ``quote + buyer_fee``; the seller receives ``quote - seller_fee``;
  the Fund receives ``buyer_fee + seller_fee``. So what the buyer pays is exactly
  what the seller and the Fund receive: no fill creates or destroys value.

Errors (``InvalidFill``, a ``ValueError``) mirror the Vault's reverts. The
matching engine never produces such fills; meeting one is a bug upstream::

    InvalidFill
    ├── FeeAboveCap     VaultFeeAboveCap: a fee rate above its order's cap
    └── FillTooSmall    VaultFillTooSmall: the quote amount rounds to zero
"""

from __future__ import annotations

from dataclasses import dataclass

PRICE_SCALE_BASE = 10**18
"""Base units priced by ``price_quote``: one whole 18-decimal token."""
BPS = 10_000
"""Basis points in 100 %."""


class InvalidFill(ValueError):
    """A fill the Vault would refuse."""


class FeeAboveCap(InvalidFill):
    """A fee rate above the order's cap (the smaller of its ``max_fee_bps`` and 100 %)."""

    def __init__(self, fee_bps: int, cap_bps: int) -> None:
        super().__init__(f"fee rate {fee_bps} bps is above the order's cap of {cap_bps} bps")
        self.fee_bps = fee_bps
        self.cap_bps = cap_bps


class FillTooSmall(InvalidFill):
    """The fill's quote amount rounds down to zero."""

    def __init__(self, amount_base: int, price_quote: int) -> None:
        super().__init__(f"{amount_base} base units at {price_quote} is worth no quote unit")
        self.amount_base = amount_base
        self.price_quote = price_quote


@dataclass(frozen=True, slots=True)
class SettlementAmounts:
    """The amounts one fill moves, all in quote-token base units.

    Field names are those of ``LibOrder.Amounts`` and of the ``Trade`` event.
    """

    quote: int
    buyer_fee: int
    seller_fee: int

    @property
    def buyer_pays(self) -> int:
        return self.quote + self.buyer_fee

    @property
    def seller_receives(self) -> int:
        return self.quote - self.seller_fee

    @property
    def fund_receives(self) -> int:
        return self.buyer_fee + self.seller_fee


def _non_negative(**values: int) -> None:
    for name, value in values.items():
        if type(value) is not int or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def quote_amount(amount_base: int, price_quote: int) -> int:
    """floor(amount_base * price_quote / 10**18): what the buyer pays the seller before fees."""
    _non_negative(amount_base=amount_base, price_quote=price_quote)
    return amount_base * price_quote // PRICE_SCALE_BASE


def fee_cap_bps(max_fee_bps: int) -> int:
    """The cap the Vault enforces for an order signed with ``max_fee_bps``: at most 100 %."""
    _non_negative(max_fee_bps=max_fee_bps)
    return min(max_fee_bps, BPS)


def fee_amount(quote: int, fee_bps: int, max_fee_bps: int) -> int:
    """The fee on ``quote``: ``fee_bps`` rounded up, capped at the exact signed cap (rounded down).

    Raises ``FeeAboveCap`` when ``fee_bps`` exceeds the order's cap.
    """
    _non_negative(quote=quote, fee_bps=fee_bps)
    cap_bps = fee_cap_bps(max_fee_bps)
    if fee_bps > cap_bps:
        raise FeeAboveCap(fee_bps, cap_bps)
    scheduled = -(-quote * fee_bps // BPS)
    return min(scheduled, quote * cap_bps // BPS)


def settlement_amounts(
    amount_base: int,
    price_quote: int,
    buyer_fee_bps: int,
    buyer_max_fee_bps: int,
    seller_fee_bps: int,
    seller_max_fee_bps: int,
) -> SettlementAmounts:
    """Every quote-token amount of a fill, exactly as the Vault settles it.

    ``*_fee_bps`` are the rates the operator applies; ``*_max_fee_bps`` the caps the
    buyer's and the seller's orders signed. The argument order is ``LibOrder.settlementAmounts``'s.
    """
    quote = quote_amount(amount_base, price_quote)
    buyer_fee = fee_amount(quote, buyer_fee_bps, buyer_max_fee_bps)
    seller_fee = fee_amount(quote, seller_fee_bps, seller_max_fee_bps)
    if quote == 0:
        raise FillTooSmall(amount_base, price_quote)
    return SettlementAmounts(quote=quote, buyer_fee=buyer_fee, seller_fee=seller_fee)
