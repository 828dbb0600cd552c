"""The whole service on the embedded EVM: its background loops credit deposits and settle fills."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import select

from exchange.chain.pool import Tier
from exchange.chain.runtime import ChainRuntime
from exchange.main import build_app
from exchange.settings import Settings
from exchange.trading import repository
from exchange.trading.eip712 import OrderSide
from exchange.trading.models import SettlementState, TradingFill
from exchange.trading.service import TradingService
from exchange.trading.settlement_service import Settlement
from tests.settlement.flows import Trader

BPC = 10**18
USD = 10**6
MAX_UINT256 = 2**256 - 1


def embedded_key(runtime: ChainRuntime, index: int) -> LocalAccount:
    """The key of the embedded EVM's unlocked account `index` (it signs orders like any member's)."""
    provider = runtime.w3.provider
    backend = provider.ethereum_tester.backend  # type: ignore[attr-defined]
    account: LocalAccount = Account.from_key(bytes(backend.account_keys[index].to_bytes()))
    return account


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "the background loops did not get there in time"
        await asyncio.sleep(0.05)


async def test_deposits_are_credited_and_fills_settled_by_the_service_loops(
    settings: Settings, chain_runtime: ChainRuntime
) -> None:
    settings = settings.model_copy(
        update={
            "vault_indexer_interval_s": 0.05,
            "settlement_interval_s": 0.05,
            "trading_membership_poll_s": 0,
        }
    )
    pool = chain_runtime.pool
    assert pool.quote is not None
    alice, bob = Trader(embedded_key(chain_runtime, 1)), Trader(embedded_key(chain_runtime, 2))
    app = build_app(settings, chain=chain_runtime)
    async with app.router.lifespan_context(app):
        trading: TradingService = app.state.trading
        settlement: Settlement = app.state.settlement
        for trader in (alice, bob):
            pool.admit(trader.address, Tier.SMALL)
            pool.mint_bpc(trader.address, 10 * BPC)
            pool.quote.transact("mint", trader.address, 1_000 * USD)
            pool.approve_bpc(pool.vault.address, MAX_UINT256, sender=trader.address)
            pool.quote.transact("approve", pool.vault.address, MAX_UINT256, sender=trader.address)
            pool.vault.transact("deposit", pool.bpc.address, 10 * BPC, sender=trader.address)
            pool.vault.transact("deposit", pool.quote.address, 1_000 * USD, sender=trader.address)

        async def credited() -> bool:
            async with app.state.db_sessionmaker() as session:
                balances = await repository.balances_of(session, bob.address)
            return pool.quote is not None and balances.get(pool.quote.address, None) is not None

        await eventually(credited)
        market = next(iter(trading.markets.values())).spec
        await trading.place_order(alice.address, alice.order(market, OrderSide.SELL, 2 * USD, BPC))
        await trading.place_order(bob.address, bob.order(market, OrderSide.BUY, 2 * USD, BPC // 2, tif="IOC"))

        async def settled() -> bool:
            async with app.state.db_sessionmaker() as session:
                states = (await session.scalars(select(TradingFill.settlement_state))).all()
            return bool(states) and set(states) == {SettlementState.SETTLED}

        await eventually(settled)
        await settlement.indexer.catch_up()
        report = await settlement.audit()
        assert report.clean, "\n".join(report.lines())
        assert pool.vault.call("balanceOf", bob.address, pool.bpc.address) == BPC // 2 + 10 * BPC
