"""Addresses a request may name: one case, or mixed as their EIP-55 checksum."""

from __future__ import annotations

import argparse

import pytest
from eth_account import Account
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from web3 import Web3

from exchange.cli import address_type as cli_address
from exchange.kit.addresses import NOT_CHECKSUM, Address, address_refusal, checked_address
from exchange.settings import Settings
from exchange.trading.eip712 import _address as order_address

addresses = st.binary(min_size=20, max_size=20).map(Web3.to_checksum_address)


@given(addresses)
def test_one_case_or_the_checksum_is_taken_and_checksummed(address: str) -> None:
    for spelling in (address, address.lower(), "0x" + address[2:].upper()):
        assert address_refusal(spelling) is None
        assert checked_address(spelling) == address


@given(addresses, st.data())
def test_any_letter_whose_case_is_swapped_is_refused(address: str, data: st.DataObject) -> None:
    letters = [i for i, char in enumerate(address) if i > 1 and char.isalpha()]
    if not letters:
        return
    at = data.draw(st.sampled_from(letters))
    typo = address[:at] + address[at].swapcase() + address[at + 1 :]
    if typo[2:] in (typo[2:].lower(), typo[2:].upper()):
        return  # one case again: no checksum to fail
    assert address_refusal(typo) == NOT_CHECKSUM
    with pytest.raises(ValueError, match="EIP-55 checksum"):
        checked_address(typo)


@pytest.mark.parametrize(
    "text", ["0x1234", "ab" * 20, "0x" + "gg" * 20, "0x" + "ab" * 20 + "\n", "0X" + "ab" * 20]
)
def test_anything_but_0x_and_40_hex_digits_is_no_address(text: str) -> None:
    assert address_refusal(text) == "is not an address (0x and 40 hex digits)"


A_CHECKSUM = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55's own example
TYPO = "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def test_every_place_an_address_comes_in_refuses_a_wrong_checksum() -> None:
    class Body(BaseModel):
        address: Address

    assert Body(address=A_CHECKSUM).address == A_CHECKSUM
    with pytest.raises(ValidationError, match="EIP-55 checksum") as refused:
        Body(address=TYPO)
    assert refused.value.errors()[0]["type"] == "address_checksum"
    with pytest.raises(ValidationError, match="EIP-55 checksum"):
        Settings(council_addresses=(Account.create().address, TYPO))
    assert Settings(council_addresses=(A_CHECKSUM.lower(),)).council_addresses == (A_CHECKSUM,)
    with pytest.raises(argparse.ArgumentTypeError, match="EIP-55 checksum"):
        cli_address(TYPO)
    with pytest.raises(ValueError, match="maker is in mixed case"):
        order_address("maker", TYPO)


def test_only_the_address_form_is_remembered() -> None:
    from exchange.kit.addresses import _checksum_refusal

    before = _checksum_refusal.cache_info().currsize
    for size in range(1, 101):
        assert address_refusal("0x" + "ab" * 20 + "0" * size * 1000) is not None
    assert _checksum_refusal.cache_info().currsize == before
