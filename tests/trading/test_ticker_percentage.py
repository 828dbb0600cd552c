"""The ticker's change in percent: exact to two places (half to even) for any uint256 prices."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from exchange.trading.market_data import _percentage

PRICES = st.integers(min_value=1, max_value=2**256 - 1)


def test_a_large_ratio_of_close_to_open_is_a_number_not_an_error() -> None:
    assert _percentage(10**28, 10**4) == "100000000000000000000000000.00"
    assert _percentage(2**256 - 2, 1) == f"{(2**256 - 2) * 100}.00"


def test_two_places_half_to_even() -> None:
    assert (_percentage(1, 3), _percentage(-1, 3), _percentage(1, 8000), _percentage(3, 8000)) == (
        "33.33",
        "-33.33",
        "0.01",  # 0.0125 -> 0.01
        "0.04",  # 0.0375 -> 0.04
    )


@given(open_=PRICES, close=PRICES)
def test_the_percentage_is_within_half_a_hundredth_of_the_exact_ratio(open_: int, close: int) -> None:
    shown = Fraction(Decimal(_percentage(close - open_, open_)))  # both exact: no rounding of our own
    assert abs(shown - Fraction(100 * (close - open_), open_)) <= Fraction(1, 200)
