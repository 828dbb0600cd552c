"""Addresses as a mistyping client sends them."""

from __future__ import annotations


def mistyped(address: str) -> str:
    """Checksummed ``address`` with one letter's case swapped: mixed case that is not its checksum."""
    at = next(i for i, char in enumerate(address) if i > 1 and char.isalpha())
    return address[:at] + address[at].swapcase() + address[at + 1 :]
