"""Fixtures of the trading service tests: the whole app on each database and the shared embedded chain.

``trading`` starts ``exchange.main.build_app`` with the trading settings below and
gives a ``Desk``: the HTTP client, the app (for its trading service and session
factory), the chain, and helpers that admit members, sign them in, credit their
Vault deposits through the ledger (the Vault indexer's ``credit_deposit``) and
sign orders with the reference EIP-712 code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from exchange.chain.runtime import ChainRuntime
from exchange.main import build_app
from exchange.settings import Settings
from tests.trading_service.desk import Desk


def trading_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "log_format": "console",
        # Other areas' loops would race these tests' writes on the SQLite file.
        "pool_indexer_interval_s": 3600,
        "licence_indexer_interval_s": 0,
        "vault_indexer_interval_s": 0,
        "settlement_interval_s": 0,
        "trading_membership_poll_s": 0,
        "trading_membership_ttl_s": 0,
        "trading_wallet_recheck_s": 0,  # tests ask for a recheck when they want one
        "trading_rate_account_per_s": 1000,
        "trading_rate_account_burst": 1000,
        "trading_rate_ip_per_s": 1000,
        "trading_rate_ip_burst": 1000,
        "trading_journal_head_interval_s": 0,  # each read of the journal head probes the writer
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return trading_settings(database_url)


async def start_desk(settings: Settings, chain: ChainRuntime) -> AsyncIterator[Desk]:
    app: FastAPI = build_app(settings, chain=chain)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield Desk(client=client, app=app, chain=chain)


@pytest.fixture
async def desk(settings: Settings, chain_runtime: ChainRuntime) -> AsyncIterator[Desk]:
    async for started in start_desk(settings, chain_runtime):
        yield started
