"""The settlement arithmetic: exact conservation, fee rounding within the signed cap, refusals."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.trading.amounts import (
    BPS,
    PRICE_SCALE_BASE,
    FeeAboveCap,
    FillTooSmall,
    fee_amount,
    quote_amount,
    settlement_amounts,
)

amounts_base = st.integers(min_value=1, max_value=2**104 - 1)
prices_quote = st.integers(min_value=1, max_value=10**24)
caps_bps = st.integers(min_value=0, max_value=2**16 - 1)


@st.composite
def fills(draw: st.DrawFn) -> tuple[int, int, int, int, int, int]:
    amount_base = draw(amounts_base)
    price_quote = draw(prices_quote)
    buyer_cap, seller_cap = draw(caps_bps), draw(caps_bps)
    buyer_rate = draw(st.integers(0, min(buyer_cap, BPS)))
    seller_rate = draw(st.integers(0, min(seller_cap, BPS)))
    return amount_base, price_quote, buyer_rate, buyer_cap, seller_rate, seller_cap


@given(fill=fills())
def test_buyer_pays_exactly_what_seller_and_fund_receive(fill: tuple[int, int, int, int, int, int]) -> None:
    amount_base, price_quote, *_ = fill
    if quote_amount(amount_base, price_quote) == 0:
        with pytest.raises(FillTooSmall):
            settlement_amounts(*fill)
        return
    result = settlement_amounts(*fill)
    assert result.buyer_pays == result.seller_receives + result.fund_receives
    assert result.seller_receives >= 0
    assert result.quote == amount_base * price_quote // PRICE_SCALE_BASE


@given(fill=fills())
def test_quote_rounds_down_by_less_than_one_unit(fill: tuple[int, int, int, int, int, int]) -> None:
    amount_base, price_quote, *_ = fill
    exact = Fraction(amount_base * price_quote, PRICE_SCALE_BASE)
    quote = quote_amount(amount_base, price_quote)
    assert quote <= exact < quote + 1


@given(quote=st.integers(0, 2**200), cap=caps_bps, data=st.data())
def test_fee_rounds_up_in_the_funds_favour_but_never_past_the_exact_cap(
    quote: int, cap: int, data: st.DataObject
) -> None:
    cap_bps = min(cap, BPS)
    rate = data.draw(st.integers(0, cap_bps))
    fee = fee_amount(quote, rate, cap)
    exact_fee = Fraction(quote * rate, BPS)
    exact_cap = Fraction(quote * cap_bps, BPS)
    assert fee <= exact_cap
    # Rounded up from the scheduled fee unless the cap cut it; never a whole unit above it.
    assert fee >= exact_fee or fee == int(exact_cap)
    assert fee < exact_fee + 1


def test_worked_examples() -> None:
    # 2 BPC at 2.5 quote-token units (6 decimals) per BPC: 5.000000 quote, 20 and 10 bps.
    result = settlement_amounts(2 * 10**18, 2_500_000, 20, 30, 10, 30)
    assert (result.quote, result.buyer_fee, result.seller_fee) == (5_000_000, 10_000, 5_000)
    # quote 3 units: 1 bps rounds up to 1 unit, but a 2 bps cap (0.0006 units) cuts it to 0.
    assert fee_amount(3, 1, 10_000) == 1
    assert fee_amount(3, 1, 2) == 0
    # 3e18 - 1 base units at 2 units per 1e18: 5.999... rounds down to 5.
    assert quote_amount(3 * 10**18 - 1, 2) == 5


def test_fee_rate_above_the_signed_cap_is_refused() -> None:
    with pytest.raises(FeeAboveCap) as refused:
        settlement_amounts(10**18, 10**6, 31, 30, 0, 0)
    assert (refused.value.fee_bps, refused.value.cap_bps) == (31, 30)


def test_caps_above_one_hundred_percent_count_as_one_hundred_percent() -> None:
    assert fee_amount(1_000, BPS, 2**16 - 1) == 1_000
    with pytest.raises(FeeAboveCap) as refused:
        fee_amount(1_000, BPS + 1, 2**16 - 1)
    assert refused.value.cap_bps == BPS


def test_dust_fill_is_refused_after_the_fee_checks() -> None:
    with pytest.raises(FillTooSmall):
        settlement_amounts(10**18 - 1, 1, 0, 0, 0, 0)
    # The Vault checks the fee caps before the quote amount: so does the mirror.
    with pytest.raises(FeeAboveCap):
        settlement_amounts(10**18 - 1, 1, 1, 0, 0, 0)


@pytest.mark.parametrize("bad", [-1, 1.0, True])
def test_non_integer_or_negative_inputs_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="non-negative integer"):
        quote_amount(bad, 1)  # type: ignore[arg-type]
