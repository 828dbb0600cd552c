"""``settlement_repository.disowned_orders``: the resting orders whose signature the Vault refused.

A fill fails for good because its order's signature is refused (a fill skipped with
``WALLET_REFUSED``; ``VaultInvalidSignature`` from a Vault deployed before it skipped such fills):
the order could never settle, so the service cancels what rests of it (``wallet_refused``). A fill
skipped for any other reason (its maker cancelled the order on chain, which the chain itself keeps
from matching again) leaves the order alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from exchange.trading import settlement_repository
from exchange.trading.models import TradingFill, TradingOrder
from exchange.trading.skipped_fills import SKIPPED_ERROR, SkippedFill, SkipReason
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, price


def _skipped(reason: SkipReason) -> tuple[str, Any]:
    return SKIPPED_ERROR, lambda order_hash: SkippedFill(0, order_hash, reason).failure_args()


@pytest.mark.parametrize(
    ("failure", "disowned"),
    [
        (("VaultInvalidSignature", lambda order_hash: {"orderHash": order_hash, "maker": "0x"}), True),
        (_skipped(SkipReason.WALLET_REFUSED), True),
        (_skipped(SkipReason.ORDER_CANCELLED), False),
    ],
    ids=["VaultInvalidSignature", "skipped-WALLET_REFUSED", "skipped-ORDER_CANCELLED"],
)
async def test_a_fill_failed_for_its_refused_signature_cancels_the_rest_of_the_order(
    desk: Desk, failure: tuple[str, Any], disowned: bool
) -> None:
    seller, buyer = await desk.member(0x71), await desk.member(0x72)
    await desk.deposit(seller, desk.market["base"], 10 * WHOLE)
    await desk.deposit(buyer, desk.market["quote"], 1_000 * DOLLAR)
    placed = await desk.place(seller, "sell", price(10), 3 * WHOLE)
    assert placed.status_code == 201, placed.text
    taken = await desk.place(buyer, "buy", price(10), WHOLE, time_in_force="IOC")
    assert taken.status_code == 201, taken.text
    sessionmaker = desk.trading.sessionmaker
    async with sessionmaker() as session:
        (fill,) = (await session.scalars(select(TradingFill))).all()
        resting = await session.get_one(TradingOrder, fill.maker_order_id)
    error_name, error_args = failure
    async with sessionmaker() as session, session.begin():
        assert await settlement_repository.fail_fill(
            session,
            fill.id,
            error_name=error_name,
            error_args=error_args(resting.order_hash.lower()),
            batch_id=None,
        )
        # Read before the commit: on PostgreSQL the failure's notice, sent at the commit, has the
        # service cancel the order, which a read after it might see between two of these queries.
        found = await settlement_repository.disowned_orders(session, fill.market_id)
        found_for_fill = await settlement_repository.disowned_orders(session, fill.market_id, [fill.id])
        found_for_other = await settlement_repository.disowned_orders(session, fill.market_id, [fill.id + 1])
    expected = [resting.id] if disowned else []
    assert [order.id for order in found] == [order.id for order in found_for_fill] == expected
    assert found_for_other == []

    # As the settler tells the service; on PostgreSQL the failure's notice may have told it first,
    # and the cancel it started may still be on its way.
    await desk.trading.fill_failed(fill.id)
    order = await desk.order(seller, placed.json()["id"])
    deadline = asyncio.get_running_loop().time() + 10
    while disowned and order["status"] == "open" and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
        order = await desk.order(seller, placed.json()["id"])
    assert (order["status"], order.get("cancel_reason")) == (
        ("canceled", "wallet_refused") if disowned else ("open", None)
    )
