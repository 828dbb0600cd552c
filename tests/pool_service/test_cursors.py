"""Page cursors of the pool's list routes: what this API issues reads back; anything else is a 422."""

from __future__ import annotations

import base64

import pytest

from exchange.api.app import bound_recursion
from exchange.api.dependencies import ROW_ID_MAX
from exchange.kit.errors import ValidationFailed
from exchange.pool.schemas import decode_cursor, encode_cursor


def _forged(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


@pytest.mark.parametrize(
    ("value", "kind"), [(1, int), (ROW_ID_MAX, int), ("EP 3300001 B1", str), ("0xAb", str)]
)
def test_an_issued_cursor_reads_back(value: str | int, kind: type[str] | type[int]) -> None:
    assert decode_cursor(encode_cursor(value), kind) == value


@pytest.mark.parametrize(
    ("cursor", "kind"),
    [
        ("not base64!", int),
        (_forged(b"[" * 20_000), int),  # nested deeper than the service's recursion limit
        (_forged(b"0"), int),
        (_forged(str(ROW_ID_MAX + 1).encode()), int),
        (_forged(b"true"), int),
        (_forged(b'"7"'), int),
        (_forged(b"7"), str),
        (_forged('"\u00e9"'.encode()), str),
        (_forged(b'"\\u0000"'), str),  # ASCII, but no text parameter of PostgreSQL takes a NUL
    ],
)
def test_a_cursor_this_api_did_not_issue_is_a_validation_failure(
    cursor: str, kind: type[str] | type[int]
) -> None:
    bound_recursion()  # as the service runs
    with pytest.raises(ValidationFailed, match="not one this API issued"):
        decode_cursor(cursor, kind)
