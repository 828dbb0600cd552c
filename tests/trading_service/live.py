"""The trading service as a real process on loopback, and a lean HTTP/1.1 client to load it.

Used by the crash test and by ``bench/api_orders.py``. The service runs as
``exchange serve`` with ``DATABASE_URL`` (PostgreSQL) and ``CHAIN_RPC_URL`` (a
Hardhat node), deploying the pool at its first start and loading the manifest
at every restart. Traders are admitted on the chain through the node's unlocked
council account, credited in the ledger with ``credit_deposit`` (what the Vault
indexer does for a deposit) and signed in over HTTP.

Orders are signed with libsecp256k1 directly (the digest comes from
``exchange.trading.signing``, which a test holds equal to the reference
EIP-712 code), so that a load generator can prepare tens of thousands quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import coincurve
import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from exchange.chain.binding import BoundContract
from exchange.chain.compiler import compile_contracts
from exchange.chain.deployment import error_decoder
from exchange.chain.pool import Tier
from exchange.db.engine import create_engine_for_url, create_sessionmaker
from exchange.trading import repository
from exchange.trading.signing import OrderDigester, OrderFields
from tests.chain.nodes import free_port
from tests.support.auth import signed_login

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- the server process


@dataclass
class ServerProcess:
    """``exchange serve`` in its own process group; ``kill()`` is a SIGKILL, ``stop()`` a clean shutdown."""

    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the service is not running")
        return self.process.pid

    def start(self, timeout_s: float = 90.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "exchange.cli", "serve", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited at start:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/markets", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the service did not start in time:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:] if self.log_path.exists() else ""


def server_env(database_url: str, rpc_url: str, manifest: Path, **settings: object) -> dict[str, str]:
    """The environment of a service on ``database_url`` and the node at ``rpc_url``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("EXCHANGE_") and name not in ("DATABASE_URL", "CHAIN_RPC_URL")
    }
    env.update(
        {
            "DATABASE_URL": database_url,
            "CHAIN_RPC_URL": rpc_url,
            "EXCHANGE_DEV_ACCOUNTS": "true",
            "EXCHANGE_DEPLOYMENT_MANIFEST": str(manifest),
            "EXCHANGE_LOG_FORMAT": "json",
            "EXCHANGE_POOL_INDEXER_INTERVAL_S": "3600",
            "EXCHANGE_LICENCE_INDEXER_INTERVAL_S": "0",
            "EXCHANGE_VAULT_INDEXER_INTERVAL_S": "0",
            "EXCHANGE_SETTLEMENT_INTERVAL_S": "0",
        }
    )
    env.update({f"EXCHANGE_{name.upper()}": str(value) for name, value in settings.items()})
    return env


def start_server(database_url: str, rpc_url: str, directory: Path, **settings: object) -> ServerProcess:
    server = ServerProcess(
        env=server_env(database_url, rpc_url, directory / "deployment.json", **settings),
        port=free_port(),
        log_path=directory / "server.log",
    )
    server.start()
    return server


@contextlib.contextmanager
def running_server(
    database_url: str, rpc_url: str, directory: Path, **settings: object
) -> Iterator[ServerProcess]:
    server = start_server(database_url, rpc_url, directory, **settings)
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- traders


@dataclass(frozen=True)
class MarketInfo:
    market_id: str
    base_token: str
    quote_token: str
    vault: str
    chain_id: int
    tick_size: int
    lot_size: int
    min_amount: int


@dataclass
class LiveTrader:
    account: LocalAccount
    token: str
    key: coincurve.PrivateKey
    nonces: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def address(self) -> str:
        return str(self.account.address)


def market_info(url: str) -> MarketInfo:
    (market,) = httpx.get(f"{url}/v1/markets").json()
    return MarketInfo(
        market_id=market["id"],
        base_token=market["base_token"],
        quote_token=market["quote_token"],
        vault=market["vault"],
        chain_id=market["chain_id"],
        tick_size=int(market["precision"]["price"]),
        lot_size=int(market["precision"]["amount"]),
        min_amount=int(market["limits"]["amount"]["min"]),
    )


def admit(url: str, rpc_url: str, accounts: list[LocalAccount]) -> None:
    """Admit ``accounts`` to the pool from the node's council account (the deployer)."""
    contracts = {
        item["name"]: item["address"] for item in httpx.get(f"{url}/v1/contracts").json()["contracts"]
    }
    artifacts = compile_contracts()
    w3 = Web3(Web3.HTTPProvider(rpc_url))
    w3.eth.default_account = w3.eth.accounts[0]
    registry = BoundContract(
        w3, "PoolRegistry", contracts["PoolRegistry"], artifacts["PoolRegistry"].abi, error_decoder(artifacts)
    )
    for account in accounts:
        if not registry.call("isActiveMember", account.address):
            registry.transact("admit", account.address, int(Tier.SMALL))


async def credit(database_url: str, market: MarketInfo, accounts: list[LocalAccount], amount: int) -> None:
    """Credit each account ``amount`` of both tokens in the ledger, as the Vault indexer would."""
    engine = create_engine_for_url(database_url)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            for account in accounts:
                for token in (market.base_token, market.quote_token):
                    await repository.credit_deposit(
                        session, account.address, token, amount, reference=f"bench:{account.address}:{token}"
                    )
    finally:
        await engine.dispose()


async def sign_in(url: str, accounts: list[LocalAccount]) -> list[LiveTrader]:
    traders = []
    async with httpx.AsyncClient(base_url=url) as client:
        for account in accounts:
            reply, _ = await signed_login(client, account)
            reply.raise_for_status()
            traders.append(
                LiveTrader(account, reply.json()["access_token"], coincurve.PrivateKey(account.key))
            )
    return traders


def accounts(count: int, offset: int = 0) -> list[LocalAccount]:
    return [Account.from_key((0x5EED_0000 + offset + index).to_bytes(32, "big")) for index in range(count)]


def order_request(
    market: MarketInfo,
    digester: OrderDigester,
    trader: LiveTrader,
    *,
    side: str,
    price_quote: int,
    amount_base: int,
    client_order_id: str,
    expiry_unix: int,
    time_in_force: str = "GTC",
    max_fee_bps: int = 50,
) -> bytes:
    """The JSON body of a signed order."""
    nonce = next(trader.nonces)
    fields = OrderFields(
        maker=trader.address,
        base_token=market.base_token,
        quote_token=market.quote_token,
        side=0 if side == "buy" else 1,
        price_quote=price_quote,
        amount_base=amount_base,
        max_fee_bps=max_fee_bps,
        nonce=nonce,
        expiry_unix=expiry_unix,
    )
    signature = trader.key.sign_recoverable(digester.digest(fields), hasher=None)
    signature = signature[:64] + bytes((signature[64] + 27,))
    body: dict[str, Any] = {
        "market": market.market_id,
        "client_order_id": client_order_id,
        "time_in_force": time_in_force,
        "chain_id": market.chain_id,
        "vault": market.vault,
        "order": {
            "maker": trader.address,
            "base_token": market.base_token,
            "quote_token": market.quote_token,
            "side": side,
            "price": str(price_quote),
            "amount": str(amount_base),
            "max_fee_bps": max_fee_bps,
            "nonce": str(nonce),
            "expiry": expiry_unix,
        },
        "signature": "0x" + signature.hex(),
    }
    return json.dumps(body, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- a lean HTTP/1.1 client


class Connection:
    """One keep-alive HTTP/1.1 connection; requests one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}", f"Content-Length: {len(body)}"]
        if body:
            lines.append("Content-Type: application/json")
        lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await self._reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self._reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
