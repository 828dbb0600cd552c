"""A member's own orders, open orders and trades page newest first: every page size walks the
list the database holds, once, in order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select

from exchange.trading.models import OrderStatus, TradingFill, TradingOrder
from tests.trading_service.desk import Desk, Trader
from tests.trading_service.test_market_data import _random_flow

FLOW_TRADERS = (0x61, 0x62)  # the keys of _random_flow's traders


async def _pages(desk: Desk, trader: Trader, path: str, limit: int, **params: Any) -> list[str]:
    ids: list[str] = []
    query: dict[str, Any] = {"limit": limit, **params}
    while True:
        reply = await desk.client.get(path, params=query, headers=trader.headers)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        assert len(page["items"]) <= limit
        ids.extend(item["id"] for item in page["items"])
        if page["next_cursor"] is None:
            return ids
        query["cursor"] = page["next_cursor"]


async def test_own_orders_and_trades_page_newest_first_whatever_the_page_size(desk: Desk) -> None:
    await _random_flow(desk, seed=33, orders=60)
    for key in FLOW_TRADERS:
        trader = await desk.member(key, admit=False)
        address = trader.address
        async with desk.trading.sessionmaker() as session:
            fills = await session.scalars(
                select(TradingFill.id)
                .where(or_(TradingFill.maker_account == address, TradingFill.taker_account == address))
                .order_by(TradingFill.id.desc())
            )
            trades = [str(fill_id) for fill_id in fills]
            rows = (
                await session.execute(
                    select(TradingOrder.id, TradingOrder.status)
                    .where(TradingOrder.account == trader.address)
                    .order_by(TradingOrder.id.desc())
                )
            ).all()
        orders = [str(order_id) for order_id, _ in rows]
        open_orders = [str(order_id) for order_id, status in rows if status == OrderStatus.OPEN.value]
        # Both roles, and more of each than the small pages: the pages merge the two.
        async with desk.trading.sessionmaker() as session:
            roles = [
                await session.scalar(select(func.count()).select_from(TradingFill).where(role == address))
                for role in (TradingFill.maker_account, TradingFill.taker_account)
            ]
        assert min(roles) > 5, roles
        assert 0 < len(open_orders) < len(orders)
        for limit in (1, 2, 5, 500):
            assert await _pages(desk, trader, "/v1/account/trades", limit) == trades
            # The one market the flow trades in (the desk has no other).
            assert await _pages(desk, trader, "/v1/account/trades", limit, market="BPC-TUSD") == trades
            assert await _pages(desk, trader, "/v1/orders", limit) == orders
            assert await _pages(desk, trader, "/v1/orders", limit, status="open") == open_orders
