"""A member's own orders, open orders and trades page newest first: every page size walks the
list the database holds, once, in order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select

from exchange.trading.models import OrderStatus, TradingFill, TradingOrder
from tests.trading_service.desk import Desk, Trader
from tests.trading_service.test_market_data import FLOW_TRADERS, _random_flow


async def _ids(desk: Desk, trader: Trader, path: str, limit: int, **params: Any) -> list[str]:
    return [item["id"] for item in await desk.listed(trader, path, limit=limit, **params)]


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
                    .where(TradingOrder.account == address)
                    .order_by(TradingOrder.id.desc())
                )
            ).all()
            # Both roles, and more of each than the small pages: the pages merge the two.
            roles = [
                await session.scalar(select(func.count()).select_from(TradingFill).where(role == address))
                for role in (TradingFill.maker_account, TradingFill.taker_account)
            ]
        assert min(roles) > 5, roles
        orders = [str(order_id) for order_id, _ in rows]
        open_orders = [str(order_id) for order_id, status in rows if status == OrderStatus.OPEN.value]
        assert 0 < len(open_orders) < len(orders)
        for limit in (1, 2, 5, 500):
            assert await _ids(desk, trader, "/v1/account/trades", limit) == trades
            # The one market the flow trades in (the desk has no other).
            assert await _ids(desk, trader, "/v1/account/trades", limit, market="BPC-TUSD") == trades
            assert await _ids(desk, trader, "/v1/orders", limit) == orders
            assert await _ids(desk, trader, "/v1/orders", limit, status="open") == open_orders
