"""A body of deeply nested JSON is a 4xx problem on every JSON route, never a crash of the process."""

from __future__ import annotations

import sys

from exchange.api.app import EVM_RECURSION_LIMIT
from tests.trading_service.desk import Desk

DEEP = b"[" * 200_000 + b"]" * 200_000


async def test_deeply_nested_bodies_are_refused(desk: Desk) -> None:
    trader = await desk.member(0x91)
    assert sys.getrecursionlimit() == EVM_RECURSION_LIMIT
    for path, headers in (
        ("/v1/orders", trader.headers),
        ("/v1/account/withdrawals", trader.headers),
        ("/v1/auth/login", {}),
        ("/v1/devices/query", {}),
        ("/v1/licences/certificates/verify", {}),
    ):
        reply = await desk.client.post(
            path, content=DEEP, headers={**headers, "Content-Type": "application/json"}
        )
        assert 400 <= reply.status_code < 500, (path, reply.status_code, reply.text[:200])
        assert reply.headers["content-type"].startswith("application/problem+json"), path
    assert (await desk.client.get("/health")).status_code == 200  # still serving
