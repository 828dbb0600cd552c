"""Trading through the real service: signed orders from members, matched into fills by the market writer."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.settings import Settings
from exchange.trading.eip712 import OrderSide, VaultOrder, sign_order
from exchange.trading.intake import SignedOrderInput
from exchange.trading.markets import MarketSpec, market_from_chain
from exchange.trading.models import SettlementState, TradingFill, TradingOrder
from exchange.trading.service import TradingService
from exchange.trading.settlement_models import BatchState, SettlementBatch, SettlementBatchFill
from exchange.trading.settlement_service import Settlement
from tests.settlement.conftest import VaultNet

PRICE_STEP_QUOTE = 10**4  # the default tick: 0.01 of a 6-decimal quote unit per BPC
MAX_FEE_BPS = 30


@dataclass
class Trader:
    key: LocalAccount  # signs the orders
    nonce: int = 0
    orders: list[VaultOrder] = field(default_factory=list)
    wallet: str | None = None  # the maker, when it is a contract wallet the key signs for (ERC-1271)

    @property
    def address(self) -> str:
        return self.wallet or str(self.key.address)

    def order(
        self, market: MarketSpec, side: OrderSide, price_quote: int, amount_base: int, *, tif: str = "GTC"
    ) -> SignedOrderInput:
        self.nonce += 1
        order = VaultOrder(
            maker=self.address,
            base_token=market.base_token,
            quote_token=market.quote_token,
            side=side,
            price_quote=price_quote,
            amount_base=amount_base,
            max_fee_bps=MAX_FEE_BPS,
            nonce=self.nonce,
            expiry_unix=int(time.time()) + 86_400,
        )
        self.orders.append(order)
        return SignedOrderInput(
            market_id=market.market_id,
            client_order_id=f"c{self.nonce}",
            time_in_force=tif,
            chain_id=market.chain_id,
            vault=market.vault,
            maker=order.maker,
            base_token=order.base_token,
            quote_token=order.quote_token,
            side="buy" if side is OrderSide.BUY else "sell",
            price_quote=price_quote,
            amount_base=amount_base,
            max_fee_bps=MAX_FEE_BPS,
            nonce=self.nonce,
            expiry_unix=order.expiry_unix,
            signature=sign_order(self.key.key, market.chain_id, market.vault, order),
        )


@asynccontextmanager
async def trading(
    net: VaultNet, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[TradingService]:
    """The trading service of the market of the session's Vault, started and stopped."""
    spec = market_from_chain(net.runtime, settings)
    service = TradingService(settings, net.runtime, sessionmaker, [spec])
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def fill_count(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(TradingFill)) or 0)


async def trade_randomly(
    service: TradingService,
    traders: list[Trader],
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    fills: int,
    seed: int,
    round_size: int = 25,
) -> int:
    """Place crossing orders in rounds (makers, then takers) until at least `fills` fills exist."""
    rng = random.Random(seed)
    market = next(iter(service.markets.values())).spec
    while (count := await fill_count(sessionmaker)) < fills:
        makers, takers = [], []
        for _ in range(round_size):
            maker, taker = rng.sample(traders, 2)
            side = rng.choice((OrderSide.BUY, OrderSide.SELL))
            price = rng.randrange(190, 211) * 10 * PRICE_STEP_QUOTE  # 1.90 to 2.10 quote units per BPC
            amount = rng.randrange(1, 21) * 10**16  # 0.01 to 0.20 BPC
            opposite = OrderSide.SELL if side is OrderSide.BUY else OrderSide.BUY
            makers.append((maker, maker.order(market, side, price, amount)))
            taker_amount = rng.randrange(1, amount // 10**16 + 1) * 10**16
            takers.append((taker, taker.order(market, opposite, price, taker_amount, tif="IOC")))
        for group in (makers, takers):
            await asyncio.gather(*(service.place_order(trader.address, order) for trader, order in group))
    return count


async def assert_settled_exactly_once(net: VaultNet, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Every fill settled in one settled batch; each order's on-chain filled amount sums its fills."""
    async with sessionmaker() as session:
        fills = (await session.scalars(select(TradingFill))).all()
        orders = {row.id: row for row in (await session.scalars(select(TradingOrder))).all()}
        memberships = (
            await session.execute(
                select(SettlementBatchFill.fill_id, SettlementBatch.state).join(
                    SettlementBatch, SettlementBatch.id == SettlementBatchFill.batch_id
                )
            )
        ).all()
    settled_in: dict[int, int] = defaultdict(int)
    for fill_id, state in memberships:
        settled_in[fill_id] += state == BatchState.SETTLED
    assert {fill.settlement_state for fill in fills} == {SettlementState.SETTLED}
    assert all(settled_in[fill.id] == 1 for fill in fills)
    expected: dict[int, int] = defaultdict(int)
    for fill in fills:
        expected[fill.maker_order_id] += fill.amount_base
        expected[fill.taker_order_id] += fill.amount_base
    functions = net.pool.vault.contract.functions
    with net.w3.batch_requests() as batch:  # one round trip for thousands of orders
        for order_id in expected:
            batch.add(functions.orderState(HexBytes(orders[order_id].order_hash)))
        states = list(batch.execute())
    on_chain = {order_id: tuple(state) for order_id, state in zip(expected, states, strict=True)}
    assert on_chain == {order_id: (amount, False) for order_id, amount in expected.items()}


async def assert_audit_clean(parts: Settlement) -> None:
    report = await parts.audit()
    assert report.clean, "\n".join(report.lines())
