"""Column types shared by the domain rooms.

Token amounts are uint256 base units. They are stored as decimal text: a
uint256 fits neither BIGINT nor, on SQLite, any exact numeric type, and the
service never sums them in SQL, so text is exact on both databases and reads
back as ``int``. ``SignedWeiAmount`` is the same for signed deltas (ledger
entries), whose magnitude is at most a uint256.
"""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

UINT256_MAX = 2**256 - 1


class WeiAmount(TypeDecorator[int]):
    """A uint256 stored as decimal text; reads back as ``int``."""

    impl = String(78)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if type(value) is not int or not 0 <= value <= UINT256_MAX:
            raise ValueError(f"{value!r} is not a uint256 amount")
        return str(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class SignedWeiAmount(TypeDecorator[int]):
    """A signed amount of magnitude at most a uint256, stored as decimal text; reads back as ``int``."""

    impl = String(79)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if type(value) is not int or not -UINT256_MAX <= value <= UINT256_MAX:
            raise ValueError(f"{value!r} is not a signed amount within a uint256's magnitude")
        return str(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> int | None:
        return None if value is None else int(value)
