"""Withdrawals co-signed by a node that signs for the operator (a Hardhat dev account)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.settings import Settings
from exchange.trading.markets import market_from_chain
from exchange.trading.service import TradingService
from exchange.trading.settlement_service import build_settlement
from tests.settlement.conftest import MEMBERS, VaultNet

pytestmark = [pytest.mark.hardhat]

# 18 decimals: most amounts are not doubles, which a node reads every JSON number as.
AMOUNT = 1_234_567_890_123_456_789


async def test_an_amount_no_double_holds_is_co_signed_as_the_vault_checks_it(
    net: VaultNet, chain_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    runtime, settings = net.node_signing(chain_settings)
    await build_settlement(runtime, settings, sessionmaker).indexer.catch_up()  # the members' deposits
    service = TradingService(settings, runtime, sessionmaker, [market_from_chain(runtime, settings)])
    await service.start()
    try:
        member = MEMBERS[0].address
        async with sessionmaker() as session, session.begin():
            withdrawal = await service.request_withdrawal(session, member, net.base_token, AMOUNT)
    finally:
        await service.stop()

    vault = net.pool.vault
    before = vault.call("balanceOf", member, net.base_token)
    signature = bytes.fromhex(withdrawal.operator_signature.removeprefix("0x"))
    arguments = (net.base_token, AMOUNT, withdrawal.nonce, withdrawal.expiry_unix, signature)
    vault.transact("withdraw", *arguments, sender=member)
    assert vault.call("balanceOf", member, net.base_token) == before - AMOUNT
