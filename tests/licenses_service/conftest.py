"""The licensing service on the shared embedded chain, with members that sign their own transactions.

``licensing`` starts the service's licensing part (auth, chain and licensing routers and hooks,
as ``build_app`` wires them, without other rooms' workers) on the test's database with the indexer's
background loop off: tests call ``catch_up()`` when they want the chain's events applied, so
nothing touches the in-process EVM behind their back. Accounts are the embedded chain's
funded accounts, whose keys are known: a test signs in with one (Sign-In with Ethereum),
signs the unsigned transactions the API returns with it, and sends them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from web3 import Web3

from exchange.api.app import create_app
from exchange.auth.routes import router as auth_router
from exchange.chain.lifespan import chain_startup
from exchange.chain.pool import PoolChain, Tier
from exchange.chain.routes import router as chain_router
from exchange.chain.runtime import ChainRuntime
from exchange.licenses.device_routes import link_router as device_link_router
from exchange.licenses.device_routes import router as devices_router
from exchange.licenses.lifespan import Licensing, licensing_startup
from exchange.licenses.routes import router as licences_router
from exchange.settings import Settings
from tests.support.auth import bearer_headers, embedded_account

BPC = 10**18
SMALL_THRESHOLD = 100 * BPC


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient
    runtime: ChainRuntime

    @property
    def pool(self) -> PoolChain:
        return self.runtime.pool

    @property
    def w3(self) -> Web3:
        return self.runtime.w3

    @property
    def licensing(self) -> Licensing:
        state: Licensing = self.app.state.licensing
        return state

    async def catch_up(self) -> int:
        return await self.licensing.indexer.catch_up()

    async def sign_in(self, account: LocalAccount) -> dict[str, str]:
        """Bearer headers of a fresh Sign-In with Ethereum session for `account`."""
        return await bearer_headers(self.client, account)

    def send(self, account: LocalAccount, transactions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Sign and send the API's unsigned transactions in order, as a wallet would; return receipts."""
        receipts = []
        for tx in transactions:
            assert tx["from"] == account.address
            assert tx["chain_id"] == self.w3.eth.chain_id
            call = {"from": account.address, "to": tx["to"], "data": tx["data"], "value": int(tx["value"])}
            gas = tx["gas"] if tx["gas"] is not None else self.w3.eth.estimate_gas(call)  # type: ignore[arg-type]
            assert tx["after_previous"] == (tx["gas"] is None)
            signed = account.sign_transaction(
                {
                    **call,
                    "chainId": tx["chain_id"],
                    "nonce": self.w3.eth.get_transaction_count(account.address),
                    "gas": gas,
                    "maxFeePerGas": 2 * self.w3.eth.get_block("latest")["baseFeePerGas"] + 10**9,
                    "maxPriorityFeePerGas": 10**9,
                }
            )
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = dict(self.w3.eth.wait_for_transaction_receipt(tx_hash))
            assert receipt["status"] == 1, receipt
            receipts.append(receipt)
        return receipts


def account(index: int) -> LocalAccount:
    """The embedded chain's funded account `index` (0 is the operator and council)."""
    return embedded_account(index)


@pytest.fixture
async def licensing(settings: Settings, chain_runtime: ChainRuntime) -> AsyncIterator[Service]:
    quiet = settings.model_copy(update={"licence_indexer_interval_s": 0.0})
    app = create_app(
        quiet,
        routers=[auth_router, chain_router, licences_router, devices_router, device_link_router],
        lifespan_hooks=[chain_startup(chain_runtime), licensing_startup()],
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield Service(app, client, chain_runtime)


def configure_small_tier(pool: PoolChain) -> None:
    """Small-tier threshold of 100 BPC (the balance at the tier's reference address)."""
    reference = account(9).address
    pool.set_tier_reference(Tier.SMALL, reference)
    if pool.bpc_balance(reference) < SMALL_THRESHOLD:
        pool.mint_bpc(reference, SMALL_THRESHOLD - pool.bpc_balance(reference))


def licensed_member(pool: PoolChain, member: LocalAccount, *, bpc: int = 1_000 * BPC) -> None:
    """`member` admitted as Small, funded with `bpc`, and holding a threshold licence."""
    configure_small_tier(pool)
    pool.admit(member.address, Tier.SMALL)
    pool.mint_bpc(member.address, bpc)
    pool.acquire(SMALL_THRESHOLD, sender=member.address)
