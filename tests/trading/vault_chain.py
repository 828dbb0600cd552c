"""A deployed pool plus a Vault, for tests and the settlement benchmark.

The Vault is not part of ``deploy_pool`` yet: this module deploys it the way
the production deployer will (council as admin, operator role granted by the
council) and opens trading accounts (admitted, funded, deposited).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from web3 import Web3

from exchange.chain.binding import BoundContract
from exchange.chain.compiler import Artifact, compile_contracts
from exchange.chain.deployment import Deployment, deploy_pool, error_decoder
from exchange.chain.pool import PoolChain, Tier

DEFAULT_EXIT_DELAY_S = 3 * 24 * 60 * 60
MAX_UINT256 = 2**256 - 1


@dataclass(frozen=True)
class VaultChain:
    """A pool deployment, its Vault, and the accounts that run them."""

    w3: Web3
    deployment: Deployment
    pool: PoolChain
    vault: BoundContract
    council: str
    operator: str
    chain_id: int

    @property
    def base_token(self) -> str:
        return self.deployment.address("BPC")

    @property
    def quote_token(self) -> str:
        return self.deployment.address("QuoteToken")

    def open_account(self, trader: str, *, base_wei: int, quote_units: int, tier: Tier = Tier.SMALL) -> None:
        """Admit `trader`, mint it both tokens, and deposit them into the Vault."""
        assert self.pool.quote is not None
        self.pool.admit(trader, tier)
        self.pool.mint_bpc(trader, base_wei)
        self.pool.quote.transact("mint", trader, quote_units)
        self.pool.approve_bpc(self.vault.address, MAX_UINT256, sender=trader)
        self.pool.quote.transact("approve", self.vault.address, MAX_UINT256, sender=trader)
        self.vault.transact("deposit", self.base_token, base_wei, sender=trader)
        self.vault.transact("deposit", self.quote_token, quote_units, sender=trader)


def deploy_vault_chain(
    w3: Web3,
    *,
    operator: str | None = None,
    exit_delay_s: int = DEFAULT_EXIT_DELAY_S,
    artifacts: Mapping[str, Artifact] | None = None,
) -> VaultChain:
    """Deploy the pool (with the test quote token) and a Vault from `w3.eth.default_account`."""
    artifacts = artifacts or compile_contracts()
    deployment = deploy_pool(w3, artifacts=artifacts)
    council = Web3.to_checksum_address(str(w3.eth.default_account))
    artifact = artifacts["Vault"]
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx_hash = factory.constructor(
        council,
        deployment.address("BPC"),
        deployment.address("QuoteToken"),
        deployment.address("PoolRegistry"),
        deployment.address("Fund"),
        exit_delay_s,
    ).transact({"from": council})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    address = receipt["contractAddress"]
    assert receipt["status"] == 1
    assert address is not None
    vault = BoundContract(w3, "Vault", address, artifact.abi, error_decoder(artifacts))
    operator = Web3.to_checksum_address(operator or council)
    vault.transact("grantRole", vault.call("OPERATOR_ROLE"), operator)
    return VaultChain(
        w3=w3,
        deployment=deployment,
        pool=PoolChain(w3, deployment, artifacts),
        vault=vault,
        council=council,
        operator=operator,
        chain_id=w3.eth.chain_id,
    )
