"""Account and contract addresses as requests spell them.

An address is 0x and 40 hex digits: all in lower case, all in upper case, or in the
mixed case of its EIP-55 checksum. Mixed case that is not the checksum is refused, as
wallets refuse it (``eth_utils.is_address`` does not: it asks only for 40 hex digits).
The checksum is there to catch a mistyped address; normalising it away would act on
whatever address the typo names (admit it, grant it a role, pay it royalties).
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Final

from eth_utils.address import is_checksum_address, is_checksum_formatted_address, to_checksum_address
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

ADDRESS_PATTERN: Final = r"^0x[0-9a-fA-F]{40}$"
ADDRESS_FORM: Final = re.compile(r"0x[0-9a-fA-F]{40}", re.ASCII)
NOT_CHECKSUM: Final = (
    "is in mixed case but not its EIP-55 checksum (mistyped?): write it in one case, or with its checksum"
)


def address_refusal(value: str) -> str | None:
    """Why ``value`` is not an address a request may name (to follow the value in a message: "is
    not …"), or None if it is."""
    if not ADDRESS_FORM.fullmatch(value):
        return "is not an address (0x and 40 hex digits)"
    return _checksum_refusal(value)


# The same few accounts and tokens, order after order. Only the address form gets here, so
# what the cache keeps is 42 characters an entry, whatever a request sends.
@functools.lru_cache(maxsize=4096)
def _checksum_refusal(value: str) -> str | None:
    if is_checksum_formatted_address(value) and not is_checksum_address(value):  # mixed case
        return NOT_CHECKSUM
    return None


def checked_address(value: str) -> str:
    """``value`` as its EIP-55 checksummed address; ValueError with :func:`address_refusal`'s reason."""
    refusal = address_refusal(value)
    if refusal is not None:
        raise ValueError(f"{value!r} {refusal}")
    return str(to_checksum_address(value))


def _field(value: str) -> str:
    """A request field's address, unchanged; refused (422 naming the field) if its case is no checksum."""
    if address_refusal(value) == NOT_CHECKSUM:
        raise PydanticCustomError("address_checksum", f"the address {NOT_CHECKSUM}")
    return value


Address = Annotated[
    str,
    Field(
        pattern=ADDRESS_PATTERN,
        description="A 20-byte address, 0x-hex: in one case, or mixed as its EIP-55 checksum.",
        examples=["0x" + "ab" * 20],
    ),
    AfterValidator(_field),
]
