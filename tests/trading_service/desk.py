"""Test helpers of the trading service: members, deposits, signed orders."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI

from exchange.chain.pool import Tier
from exchange.chain.runtime import ChainRuntime
from exchange.trading import eip712, repository, settlement_repository
from exchange.trading.service import TradingService
from exchange.trading.writer import MarketWriter
from tests.support.auth import bearer_headers, embedded_account, signed_login
from tests.support.wallets import deploy_wallet

WHOLE = 10**18  # one BPC in base units
DOLLAR = 10**6  # one TUSD in base units
_NONCES = itertools.count(1)


async def until_stopped(writer: MarketWriter) -> None:
    """Wait for ``writer``'s loop to end (a refusal is answered as it ends), at most a second."""
    for _ in range(100):
        if not writer.running:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the writer of {writer.market_id} is still running")


def price(dollars_per_bpc: float) -> int:
    """A Vault price (quote base units per 10**18 base units) for a price in TUSD per BPC."""
    return round(dollars_per_bpc * DOLLAR)


def vault_order(body: dict[str, Any]) -> eip712.VaultOrder:
    """The Vault order a ``Desk.order_body`` carries (what was signed)."""
    order = body["order"]
    return eip712.VaultOrder(
        maker=order["maker"],
        base_token=order["base_token"],
        quote_token=order["quote_token"],
        side=eip712.OrderSide.BUY if order["side"] == "buy" else eip712.OrderSide.SELL,
        price_quote=int(order["price"]),
        amount_base=int(order["amount"]),
        max_fee_bps=order["max_fee_bps"],
        nonce=int(order["nonce"]),
        expiry_unix=order["expiry"],
    )


@dataclass
class Trader:
    account: LocalAccount  # the key that signs: the member's own, or its contract wallet's owner's
    headers: dict[str, str]
    wallet: str | None = None  # the member, when it is a contract wallet (ERC-1271)

    @property
    def address(self) -> str:
        return self.wallet or str(self.account.address)


@dataclass
class Desk:
    client: httpx.AsyncClient
    app: FastAPI
    chain: ChainRuntime
    _client_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def trading(self) -> TradingService:
        service: TradingService = self.app.state.trading
        return service

    @property
    def market(self) -> dict[str, Any]:
        spec = next(iter(self.trading.markets.values())).spec
        return {
            "id": spec.market_id,
            "base": spec.base_token,
            "quote": spec.quote_token,
            "vault": spec.vault,
            "chain_id": spec.chain_id,
        }

    async def member(self, key: int | LocalAccount, *, admit: bool = True) -> Trader:
        """Sign in (and admit) the account with key ``bytes([key]) * 32``, or ``key`` itself."""
        account: LocalAccount = key if isinstance(key, LocalAccount) else Account.from_key(bytes([key]) * 32)
        if admit:
            self.chain.pool.admit(account.address, Tier.SMALL)
        return Trader(account, await bearer_headers(self.client, account))

    async def wallet_member(self, owner: LocalAccount) -> Trader:
        """An admitted, signed-in member that is a contract wallet taking ``owner``'s signatures
        as its own (ERC-1271): its orders name the wallet as maker and carry the owner's signature."""
        wallet = deploy_wallet(
            self.chain.w3, "ERC1271Wallet", owner.address, sender=embedded_account(0).address
        )
        self.chain.pool.admit(wallet.address, Tier.SMALL)
        reply, _ = await signed_login(self.client, owner, address=wallet.address)
        assert reply.status_code == 200, reply.text
        return Trader(
            owner, {"Authorization": f"Bearer {reply.json()['access_token']}"}, wallet=wallet.address
        )

    async def deposit(self, trader: Trader | str, token: str, amount: int) -> None:
        address = trader if isinstance(trader, str) else trader.address
        async with self.trading.sessionmaker() as session, session.begin():
            await repository.credit_deposit(
                session, address, token, amount, reference=f"test:{address}:{token}:{next(_NONCES)}"
            )

    def deposit_quote_in_vault(self, trader: Trader, amount: int) -> None:
        """`trader` (an account funded with ether) gets `amount` of the quote token minted and
        deposits it in the Vault itself, on chain: the ledger learns of it from the indexer."""
        pool, market = self.chain.pool, self.market
        assert pool.quote is not None
        pool.quote.transact("mint", trader.address, amount)
        pool.quote.transact("approve", market["vault"], amount, sender=trader.address)
        pool.vault.transact("deposit", market["quote"], amount, sender=trader.address)

    async def funded_in_the_vault(self, seller_key: int = 6, buyer_key: int = 5) -> tuple[Trader, Trader]:
        """Two members of the embedded accounts ``seller_key`` and ``buyer_key`` (which hold ether
        and send their own transactions): the seller with 2 BPC and the buyer with 100 of the
        quote token deposited in the Vault, and credited by the indexer."""
        market, pool = self.market, self.chain.pool
        seller = await self.member(embedded_account(seller_key))
        buyer = await self.member(embedded_account(buyer_key))
        pool.mint_bpc(seller.address, 2 * WHOLE)
        pool.approve_bpc(market["vault"], 2 * WHOLE, sender=seller.address)
        pool.vault.transact("deposit", market["base"], 2 * WHOLE, sender=seller.address)
        self.deposit_quote_in_vault(buyer, 100 * DOLLAR)
        await self.app.state.settlement.indexer.catch_up()
        return seller, buyer

    def order_body(
        self,
        trader: Trader,
        side: str,
        price_quote: int,
        amount_base: int,
        *,
        client_order_id: str | None = None,
        nonce: int | None = None,
        expiry: int | None = None,
        max_fee_bps: int = 50,
        time_in_force: str = "GTC",
        chain_id: int | None = None,
        vault: str | None = None,
        sign_chain_id: int | None = None,
        sign_vault: str | None = None,
        signer: LocalAccount | None = None,
    ) -> dict[str, Any]:
        market = self.market
        order = eip712.VaultOrder(
            maker=trader.address,
            base_token=market["base"],
            quote_token=market["quote"],
            side=eip712.OrderSide.BUY if side == "buy" else eip712.OrderSide.SELL,
            price_quote=price_quote,
            amount_base=amount_base,
            max_fee_bps=max_fee_bps,
            nonce=next(_NONCES) if nonce is None else nonce,
            expiry_unix=int(time.time()) + 3600 if expiry is None else expiry,
        )
        signature = eip712.sign_order(
            (signer or trader.account).key,
            sign_chain_id or market["chain_id"],
            sign_vault or market["vault"],
            order,
        )
        return {
            "market": market["id"],
            "client_order_id": client_order_id or f"c-{next(self._client_ids)}",
            "time_in_force": time_in_force,
            "chain_id": chain_id or market["chain_id"],
            "vault": vault or market["vault"],
            "order": {
                "maker": order.maker,
                "base_token": order.base_token,
                "quote_token": order.quote_token,
                "side": side,
                "price": str(order.price_quote),
                "amount": str(order.amount_base),
                "max_fee_bps": order.max_fee_bps,
                "nonce": str(order.nonce),
                "expiry": order.expiry_unix,
            },
            "signature": "0x" + signature.hex(),
        }

    async def place(
        self, trader: Trader, side: str, price_quote: int, amount_base: int, **options: Any
    ) -> httpx.Response:
        body = self.order_body(trader, side, price_quote, amount_base, **options)
        return await self.client.post("/v1/orders", json=body, headers=trader.headers)

    async def replace(
        self,
        trader: Trader,
        order_id: str | int,
        side: str,
        price_quote: int,
        amount_base: int,
        **options: Any,
    ) -> httpx.Response:
        """Replace ``trader``'s order ``order_id`` with a new signed order (``order_body``'s options)."""
        body = self.order_body(trader, side, price_quote, amount_base, **options)
        return await self.client.post(f"/v1/orders/{order_id}/replace", json=body, headers=trader.headers)

    async def withdraw(
        self, trader: Trader, token: str, amount: int, *, key: str | None = None
    ) -> httpx.Response:
        """``trader`` asks for a withdrawal authorisation (with ``key`` as its Idempotency-Key)."""
        headers = trader.headers if key is None else {**trader.headers, "Idempotency-Key": key}
        return await self.client.post(
            "/v1/account/withdrawals", json={"token": token, "amount": str(amount)}, headers=headers
        )

    async def fail_fills(self, fill_ids: list[int], *, settler_here: bool) -> None:
        """Fail fills for good, as the settler does when the Vault refuses them.

        ``settler_here``: the settler runs in this process and tells the service (``fill_failed``);
        otherwise (``exchange settle`` elsewhere) the service hears of it from PostgreSQL's notice
        (``exchange.trading.fill_notices``) or reads it from the database.
        """
        async with self.trading.sessionmaker() as session, session.begin():
            for fill_id in fill_ids:
                await settlement_repository.fail_fill(
                    session, fill_id, error_name="VaultOrderCancelled", error_args={}, batch_id=None
                )
        if settler_here:
            for fill_id in fill_ids:
                await self.trading.fill_failed(fill_id)

    async def order(self, trader: Trader, order_id: str) -> dict[str, Any]:
        """One of the trader's orders as GET /v1/orders/{id} answers it."""
        reply = await self.client.get(f"/v1/orders/{order_id}", headers=trader.headers)
        assert reply.status_code == 200, reply.text
        order: dict[str, Any] = reply.json()
        return order

    async def orders(self, trader: Trader) -> list[dict[str, Any]]:
        """The trader's orders as GET /v1/orders lists them (newest first, first page)."""
        reply = await self.client.get("/v1/orders", headers=trader.headers)
        assert reply.status_code == 200, reply.text
        items: list[dict[str, Any]] = reply.json()["items"]
        return items

    async def journal(self) -> dict[str, Any]:
        """The market's journal head (sequence, state hash, open orders)."""
        reply = await self.client.get(f"/v1/markets/{self.market['id']}/journal")
        assert reply.status_code == 200, reply.text
        head: dict[str, Any] = reply.json()
        return head

    async def listed(
        self, trader: Trader, path: str, *, limit: int = 500, **params: Any
    ) -> list[dict[str, Any]]:
        """Every item of ``trader``'s cursor-paginated list at ``path``, page by page of at most ``limit``."""
        items: list[dict[str, Any]] = []
        query: dict[str, Any] = {"limit": limit, **params}
        while True:
            reply = await self.client.get(path, params=query, headers=trader.headers)
            assert reply.status_code == 200, reply.text
            page = reply.json()
            assert len(page["items"]) <= limit
            items.extend(page["items"])
            if page["next_cursor"] is None:
                return items
            query["cursor"] = page["next_cursor"]

    async def balances(self, trader: Trader) -> dict[str, dict[str, int]]:
        reply = await self.client.get("/v1/account/balances", headers=trader.headers)
        assert reply.status_code == 200, reply.text
        return {
            item["token"]: {name: int(item[name]) for name in ("total", "available", "reserved")}
            for item in reply.json()["balances"]
        }
