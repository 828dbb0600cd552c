"""Hypothesis strategies for the pool tests: patent number spellings and contributor addresses.

``patent_number_spellings()`` draws ``(text, expected compact DOCDB form)``
pairs. The expected form is built from the drawn parts by the rules in
``exchange.pool.patent_numbers``' docstring, independently of its parser.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.strategies import DrawFn

from exchange.pool.patent_numbers import OFFICE_KIND_CODES, PATENT_COUNTRY_CODES

_GENERIC_COUNTRIES = sorted(PATENT_COUNTRY_CODES - set(OFFICE_KIND_CODES))
_US_GRANT_KINDS = ["A", "B1", "B2", "C1", "C2", "C3"]
_US_PUBLICATION_KINDS = ["A1", "A2", "A9", "P1", "P4", "P9"]
# (prefix, kinds, most digits) of the prefixed US series
_US_SERIES = [("D", ["S"], 7), ("RE", ["E"], 6), ("PP", ["P", "P2", "P3"], 6), ("H", ["H"], 7)]


def _kind(draw: DrawFn, country: str) -> str:
    return draw(st.sampled_from(sorted(OFFICE_KIND_CODES[country])))


def _gap(draw: DrawFn) -> str:
    return draw(st.sampled_from(["", " "]))


def _grouped(draw: DrawFn, digits: str) -> str:
    """``digits`` as written by someone: plain, or in groups of three from the right."""
    separator = draw(st.sampled_from(["", " ", ",", "."]))
    if not separator:
        return digits
    groups: list[str] = []
    while digits:
        groups.insert(0, digits[-3:])
        digits = digits[:-3]
    return separator.join(groups)


def _digit_string(draw: DrawFn, min_size: int, max_size: int) -> str:
    digits = draw(st.text(alphabet="0123456789", min_size=min_size, max_size=max_size))
    return digits if digits.strip("0") else digits[:-1] + "1"


@st.composite
def _us(draw: DrawFn) -> tuple[str, str]:
    shape = draw(st.sampled_from(["grant", "series", "publication"]))
    if shape == "grant":
        kind = draw(st.sampled_from(_US_GRANT_KINDS))
        number = draw(st.integers(1, 99_999_999))
        digits = draw(st.sampled_from([str(number), f"{number:08d}"]))
        return f"US{_gap(draw)}{_grouped(draw, digits)}{_gap(draw)}{kind}", f"US{number}{kind}"
    if shape == "series":
        prefix, kinds, most_digits = draw(st.sampled_from(_US_SERIES))
        kind = draw(st.sampled_from(kinds))
        number = draw(st.integers(1, 10**most_digits - 1))
        written = f"{prefix}{_grouped(draw, str(number))}"
        return f"US{_gap(draw)}{written}{_gap(draw)}{kind}", f"US{prefix}{number}{kind}"
    kind = draw(st.sampled_from(_US_PUBLICATION_KINDS))
    year = draw(st.integers(2001, 2099))
    serial = draw(st.integers(1, 999_999))
    written = draw(st.sampled_from([f"{year}/{serial:07d}", f"{year}{serial:07d}", f"{year}{serial:06d}"]))
    return f"US{_gap(draw)}{written}{_gap(draw)}{kind}", f"US{year}{serial:06d}{kind}"


@st.composite
def _ep(draw: DrawFn) -> tuple[str, str]:
    kind = _kind(draw, "EP")
    number = draw(st.integers(1, 9_999_999))
    digits = draw(st.sampled_from([str(number), f"{number:07d}"]))
    return f"EP{_gap(draw)}{_grouped(draw, digits)}{_gap(draw)}{kind}", f"EP{number:07d}{kind}"


@st.composite
def _wo(draw: DrawFn) -> tuple[str, str]:
    kind = _kind(draw, "WO")
    shape = draw(st.sampled_from(["four-digit year", "five-digit serial", "six-digit serial"]))
    if shape == "four-digit year":
        year = draw(st.integers(2004, 2099))
        serial = draw(st.integers(1, 999_999))
        written = draw(st.sampled_from([f"{year}/{serial}", f"{year}/{serial:06d}", f"{year}{serial:06d}"]))
        expected = f"{year}{serial:06d}"
    else:
        year_2 = draw(st.sampled_from([f"{y:02d}" for y in [*range(78, 100), *range(4)]]))
        if shape == "five-digit serial":
            serial = draw(st.integers(1, 99_999))
            written = draw(
                st.sampled_from([f"{year_2}/{serial}", f"{year_2}/{serial:05d}", f"{year_2}{serial:05d}"])
            )
            expected = f"{year_2}{serial:05d}"
        else:
            serial_6 = f"{draw(st.integers(1, 999_999)):06d}"
            written = draw(st.sampled_from([f"{year_2}/{serial_6}", f"{year_2}{serial_6}"]))
            expected = f"{year_2}{serial_6}"
    return f"WO{_gap(draw)}{written}{_gap(draw)}{kind}", f"WO{expected}{kind}"


@st.composite
def _cn(draw: DrawFn) -> tuple[str, str]:
    kind = _kind(draw, "CN")
    digits = _digit_string(draw, 7, 9)
    return f"CN{_gap(draw)}{digits}{_gap(draw)}{kind}", f"CN{digits}{kind}"


@st.composite
def _jp(draw: DrawFn) -> tuple[str, str]:
    kind = _kind(draw, "JP")
    shape = draw(st.sampled_from(["western", "era", "registration"]))
    serial = draw(st.integers(1, 999_999))
    if shape == "western":
        year = draw(st.integers(2000, 2099))
        written = draw(st.sampled_from([f"{year}-{serial}", f"{year}-{serial:06d}", f"{year}{serial:06d}"]))
        expected = f"{year}{serial:06d}"
    elif shape == "era":
        letter, last_year = draw(st.sampled_from([("S", 64), ("H", 11)]))
        era_year = draw(st.integers(1, last_year))
        written = draw(
            st.sampled_from(
                [
                    f"{letter}{era_year}-{serial}",
                    f"{letter}{era_year:02d}-{serial:06d}",
                    f"{letter}{era_year:02d}{serial:06d}",
                ]
            )
        )
        expected = f"{letter}{era_year:02d}{serial:06d}"
    else:
        number = draw(st.integers(1, 9_999_999))
        written = draw(st.sampled_from([str(number), f"{number:07d}"]))
        expected = str(number)
    return f"JP{_gap(draw)}{written}{_gap(draw)}{kind}", f"JP{expected}{kind}"


@st.composite
def _de(draw: DrawFn) -> tuple[str, str]:
    kind = _kind(draw, "DE")
    if draw(st.booleans()):
        type_of_right = draw(st.sampled_from(["10", "11", "20", "21", "50", "60"]))
        year = draw(st.integers(2004, 2099))
        serial = f"{draw(st.integers(1, 999_999)):06d}"
        written = draw(
            st.sampled_from(
                [f"{type_of_right} {year} {serial[:3]} {serial[3:]}", f"{type_of_right}{year}{serial}"]
            )
        )
        expected = f"{type_of_right}{year}{serial}"
    else:
        expected = _digit_string(draw, 7, 8)
        written = _grouped(draw, expected)
    return f"DE{_gap(draw)}{written}{_gap(draw)}{kind}", f"DE{expected}{kind}"


@st.composite
def _kr(draw: DrawFn) -> tuple[str, str]:
    type_of_right = draw(st.sampled_from(["10", "20"]))
    serial = draw(st.integers(1, 9_999_999))
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["A", "B1"] if type_of_right == "10" else ["U", "Y1"]))
        year = draw(st.integers(1999, 2099))
        written = draw(
            st.sampled_from(
                [
                    f"{type_of_right}-{year}-{serial:07d}",
                    f"{type_of_right}-{year}-{serial}",
                    f"{type_of_right}{year}{serial:07d}",
                    f"{year}{serial:07d}",
                ]
            )
        )
        expected = f"{year}{serial:07d}"
    else:
        kind = draw(st.sampled_from(["B1", "B2"] if type_of_right == "10" else ["Y1", "Y2"]))
        written = draw(
            st.sampled_from(
                [f"{type_of_right}-{serial:07d}", f"{type_of_right}-{serial}", f"{type_of_right}{serial:07d}"]
            )
        )
        expected = f"{type_of_right}{serial:07d}"
    return f"KR{_gap(draw)}{written}{_gap(draw)}{kind}", f"KR{expected}{kind}"


@st.composite
def _gb_or_fr(draw: DrawFn) -> tuple[str, str]:
    country = draw(st.sampled_from(["GB", "FR"]))
    kind = _kind(draw, country)
    number = draw(st.integers(1, 9_999_999))
    digits = draw(st.sampled_from([str(number), f"{number:07d}"]))
    return f"{country}{_gap(draw)}{_grouped(draw, digits)}{_gap(draw)}{kind}", f"{country}{number}{kind}"


@st.composite
def _other_office(draw: DrawFn) -> tuple[str, str]:
    country = draw(st.sampled_from(_GENERIC_COUNTRIES))
    kind = draw(st.sampled_from("ABCEFHIKLMNPRSTUWXYZ")) + draw(st.sampled_from(["", *"0123456789"]))
    digits = _digit_string(draw, 1, 12)
    return f"{country}{_gap(draw)}{_grouped(draw, digits)}{_gap(draw)}{kind}", f"{country}{digits}{kind}"


def patent_number_spellings() -> st.SearchStrategy[tuple[str, str]]:
    """``(text, expected compact DOCDB form)`` for every office with rules, and others."""
    return st.one_of(_us(), _ep(), _wo(), _cn(), _jp(), _de(), _kr(), _gb_or_fr(), _other_office())


def addresses() -> st.SearchStrategy[str]:
    """Lower-case 0x addresses (the rules checksum them), from a small pool so they repeat."""
    return st.integers(1, 40).map(lambda n: "0x" + f"{n * 0x9E3779B97F4A7C15:040x}"[-40:])
