"""Fixtures of the pool service tests: the whole service with foundation roles, signed-in actors.

The settings name a council, a registrar and three assessors (fixed keys), and
an admission policy of two assessments, so that a patent is admitted in a few
calls. The background indexer loop is slowed to an hour: the services catch up
in the request that changes the chain, which is what the tests check; the loop
itself has a test of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from unittest import mock

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI

from exchange.chain.runtime import ChainRuntime
from exchange.main import build_app
from exchange.settings import Settings
from exchange.trading.market_claim import MarketClaim
from tests.support.auth import bearer_headers

COUNCIL: LocalAccount = Account.from_key(b"\xc0" * 32)
REGISTRAR: LocalAccount = Account.from_key(b"\xe6" * 32)
ASSESSORS: tuple[LocalAccount, ...] = tuple(Account.from_key(bytes([0xA0 + i]) * 32) for i in range(3))
OUTSIDER: LocalAccount = Account.from_key(b"\x0e" * 32)
MIN_ASSESSMENTS = 2


def pool_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "log_format": "console",
        "council_addresses": (COUNCIL.address,),
        "registrar_addresses": (REGISTRAR.address,),
        "assessor_addresses": tuple(account.address for account in ASSESSORS),
        "pool_indexer_interval_s": 3600,
        # Other areas' loops: not needed here, and writers racing on one SQLite file.
        "licence_indexer_interval_s": 0,
        "vault_indexer_interval_s": 0,
        "settlement_interval_s": 0,
        "pool_admission_min_assessments": MIN_ASSESSMENTS,
        "pool_admission_min_mean_score": 60,
    }
    values.update(overrides)
    return Settings.model_validate(values)


async def _no_claim(claim: MarketClaim) -> None:
    return None


@contextlib.asynccontextmanager
async def started_beside(settings: Settings, chain: ChainRuntime) -> AsyncIterator[FastAPI]:
    """A second service on the database of the one the test runs, started for what its start
    does (the pool's sweeps, a mint found on chain) while the first one goes on serving. One
    process writes a market (``exchange.trading.market_claim``): this one's market writer leaves the
    market to the first one's claim, and takes no order."""
    app = build_app(settings, chain=chain)
    with mock.patch.object(MarketClaim, "take", _no_claim):
        async with app.router.lifespan_context(app):
            yield app


@pytest.fixture
def settings(database_url: str) -> Settings:
    return pool_settings(database_url)


@dataclass(frozen=True)
class Foundation:
    """The service client and the bearer headers of each foundation role and of an outsider."""

    client: httpx.AsyncClient
    chain: ChainRuntime
    council: dict[str, str]
    registrar: dict[str, str]
    assessors: tuple[dict[str, str], ...]
    outsider: dict[str, str]

    def headers_of(self, role: str) -> dict[str, str]:
        return {
            "council": self.council,
            "registrar": self.registrar,
            "assessor": self.assessors[0],
            "outsider": self.outsider,
            "anonymous": {},
        }[role]


@pytest.fixture
async def foundation(service: httpx.AsyncClient, chain_runtime: ChainRuntime) -> Foundation:
    return Foundation(
        client=service,
        chain=chain_runtime,
        council=await bearer_headers(service, COUNCIL),
        registrar=await bearer_headers(service, REGISTRAR),
        assessors=tuple([await bearer_headers(service, account) for account in ASSESSORS]),
        outsider=await bearer_headers(service, OUTSIDER),
    )
