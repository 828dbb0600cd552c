"""A Hardhat node with the pool deployed, trading members who deposited into the Vault, and the parts.

Session: one Hardhat node; the pool deployed from a fresh operator key (so the
settler signs locally, as in production); ``MEMBERS`` admitted, funded and with
deposits in the Vault. Each test runs inside an EVM snapshot reverted afterwards,
on its own database (``database_url``: SQLite and PostgreSQL in turn), so the
Vault indexer credits the same deposits into every test's empty ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from pydantic import SecretStr
from web3 import Web3
from web3.types import Wei

from exchange.chain.deployment import Deployment, deploy_pool
from exchange.chain.pool import PoolChain, Tier
from exchange.chain.provider import make_web3
from exchange.chain.runtime import ChainRuntime
from exchange.settings import Settings
from tests.chain.nodes import hardhat_node

BPC = 10**18
USD = 10**6
MAX_UINT256 = 2**256 - 1
MEMBER_COUNT = 4
DEPOSIT_BASE_WEI = 10_000 * BPC
DEPOSIT_QUOTE_UNITS = 100_000 * USD
WALLET_QUOTE_UNITS = 10_000 * USD


def fixed_key(label: str) -> LocalAccount:
    account: LocalAccount = Account.from_key(keccak(f"settlement-tests-{label}".encode()))
    return account


OPERATOR = fixed_key("operator")
MEMBERS = [fixed_key(f"member-{index}") for index in range(MEMBER_COUNT)]


@dataclass(frozen=True)
class VaultNet:
    """The session's Hardhat node and what was deployed on it."""

    url: str
    w3: Web3  # signs as the operator; members' keys are registered too
    deployment: Deployment
    manifest: Path
    pool: PoolChain

    @property
    def runtime(self) -> ChainRuntime:
        return ChainRuntime(w3=self.w3, deployment=self.deployment, pool=self.pool, embedded=False)

    @property
    def base_token(self) -> str:
        return self.deployment.address("BPC")

    @property
    def quote_token(self) -> str:
        return self.deployment.address("QuoteToken")

    def rpc(self, method: str, *params: object) -> object:
        reply = self.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def mine(self, blocks: int = 1) -> None:
        for _ in range(blocks):
            self.rpc("evm_mine")

    def node_signing(self, settings: Settings) -> tuple[ChainRuntime, Settings]:
        """The runtime and settings of a service whose operator is a Hardhat dev account the
        node signs for (given the Vault's operator role here)."""
        node_operator = self.w3.eth.accounts[0]
        self.pool.vault.transact("grantRole", self.pool.vault.call("OPERATOR_ROLE"), node_operator)
        runtime = ChainRuntime(
            w3=make_web3(self.url), deployment=self.deployment, pool=self.pool, embedded=False
        )
        return runtime, settings.model_copy(update={"operator_private_key": None, "dev_accounts": True})


def _fund(w3: Web3, accounts: list[str]) -> None:
    funder = w3.eth.accounts[0]
    for account in accounts:
        tx = w3.eth.send_transaction({"from": funder, "to": account, "value": Wei(100 * 10**18)})
        w3.eth.wait_for_transaction_receipt(tx)


def open_member(net: VaultNet, member: str, *, base_wei: int, quote_units: int) -> None:
    """Admit `member`, mint it both tokens, approve the Vault and deposit both."""
    pool, vault = net.pool, net.pool.vault
    assert pool.quote is not None
    pool.admit(member, Tier.SMALL)
    pool.mint_bpc(member, base_wei)
    pool.quote.transact("mint", member, quote_units)
    pool.approve_bpc(vault.address, MAX_UINT256, sender=member)
    pool.quote.transact("approve", vault.address, MAX_UINT256, sender=member)
    vault.transact("deposit", net.base_token, base_wei, sender=member)
    vault.transact("deposit", net.quote_token, quote_units, sender=member)


@pytest.fixture(scope="session")
def vault_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultNet]:
    with hardhat_node() as url:
        _fund(Web3(Web3.HTTPProvider(url)), [OPERATOR.address, *(m.address for m in MEMBERS)])
        w3 = make_web3(url, operator_key=OPERATOR.key.hex())
        from web3.middleware import SignAndSendRawMiddlewareBuilder

        w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(MEMBERS), layer=0)
        deployment = deploy_pool(w3)
        manifest = tmp_path_factory.mktemp("deployment") / "manifest.json"
        deployment.write(manifest)
        net = VaultNet(
            url=url, w3=w3, deployment=deployment, manifest=manifest, pool=PoolChain(w3, deployment)
        )
        assert net.pool.quote is not None
        for member in MEMBERS:
            open_member(net, member.address, base_wei=DEPOSIT_BASE_WEI, quote_units=DEPOSIT_QUOTE_UNITS)
            net.pool.quote.transact("mint", member.address, WALLET_QUOTE_UNITS)  # for deposits in tests
        yield net


@pytest.fixture
def net(vault_net: VaultNet) -> Iterator[VaultNet]:
    """The session's chain, with everything this test does reverted afterwards."""
    snapshot = vault_net.rpc("evm_snapshot")
    try:
        yield vault_net
    finally:
        vault_net.rpc("evm_setAutomine", True)
        vault_net.rpc("evm_revert", snapshot)


@pytest.fixture
def chain_settings(database_url: str, vault_net: VaultNet) -> Settings:
    """Settings of a service on this database and the Hardhat node, loops off (tests drive the parts)."""
    return Settings(
        database_url=database_url,
        chain_rpc_url=vault_net.url,
        operator_private_key=SecretStr(OPERATOR.key.hex()),
        deployment_manifest=vault_net.manifest,
        log_format="console",
        vault_indexer_interval_s=0,
        settlement_interval_s=0,
        trading_membership_poll_s=0,
        trading_wallet_recheck_s=0,
        trading_verify_replay_on_start=False,
    )
