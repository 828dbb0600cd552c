"""Typed access to the deployed pool: registry, tokens, licence gate, fund and Vault.

Amounts are integers in base units (``*_wei``: BPC has 18 decimals). Every
method raises ``ContractReverted`` (with the contract's custom error) or
``ChainUnavailable``; no web3 exception leaves this module.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_typing import HexStr
from web3 import Web3
from web3.exceptions import TransactionNotFound
from web3.types import BlockIdentifier, TxReceipt

from exchange.chain.binding import BoundContract
from exchange.chain.compiler import Artifact, compile_contracts
from exchange.chain.deployment import Deployment, error_decoder


class Tier(IntEnum):
    """Enterprise-size tiers (PoolRegistry.Tier)."""

    NON_PROFIT = 0
    SMALL = 1
    MEDIUM = 2
    LARGE = 3


class MemberStatus(IntEnum):
    """Membership status (PoolRegistry.Status)."""

    NONE = 0
    ACTIVE = 1
    SUSPENDED = 2
    EXPELLED = 3


class LicenceKind(IntEnum):
    """How a BPR was obtained (IBPR.LicenceKind)."""

    NONE = 0
    LOCKED = 1
    NON_PROFIT = 2
    FEE = 3


@dataclass(frozen=True)
class Member:
    account: str
    tier: Tier
    status: MemberStatus
    admitted_at: int


@dataclass(frozen=True)
class Licence:
    """A BPR record; `expires_at` is zero for licences without a term."""

    holder: str
    token_id: int
    kind: LicenceKind
    tier: Tier
    expires_at: int
    since_block: int
    locked_bpc_wei: int
    licensed: bool

    @property
    def held(self) -> bool:
        """Whether the holder has a BPR record at all (licensed now or not)."""
        return self.kind is not LicenceKind.NONE

    @property
    def member_tier(self) -> Tier | None:
        """The tier of a threshold or non-profit licence; None without a record, and for a fee
        licence, bought by a non-member (the chain records non-profit there)."""
        return self.tier if self.held and self.kind is not LicenceKind.FEE else None


SERVICE_ROLES: tuple[tuple[str, str, str], ...] = (
    ("PoolRegistry", "REGISTRAR_ROLE", "admitting, re-tiering, suspending and expelling members"),
    ("LicenseGate", "REVOKER_ROLE", "revoking the licences of expelled and re-tiered members"),
    ("BPC", "MINTER_ROLE", "minting the BPC owed for contributed patents"),
    ("Fund", "TREASURER_ROLE", "paying royalties"),
    ("Vault", "OPERATOR_ROLE", "settling trades and co-signing withdrawals"),
)
"""The roles the service's own transactions, sent from its operator account, need."""


class PoolChain:
    """The deployed pool contracts on one chain."""

    def __init__(
        self, w3: Web3, deployment: Deployment, artifacts: Mapping[str, Artifact] | None = None
    ) -> None:
        artifacts = artifacts or compile_contracts()
        decoder = error_decoder(artifacts)
        self.w3 = w3
        self.deployment = deployment

        def bind(name: str, artifact_name: str | None = None) -> BoundContract:
            abi = artifacts[artifact_name or name].abi
            return BoundContract(w3, name, deployment.address(name), abi, decoder)

        self.registry = bind("PoolRegistry")
        self.bpc = bind("BPC")
        self.bpr = bind("BPR")
        self.fund = bind("Fund")
        self.gate = bind("LicenseGate")
        self.devices = bind("DeviceLicenses")
        self.vault = bind("Vault")
        self.quote = bind("QuoteToken", "TestToken") if "QuoteToken" in deployment.contracts else None

    @functools.cached_property
    def deployed_by(self) -> int:
        """The first block at which every pool contract exists: the block of the deployment's last
        contract creation, as a deployment spans blocks and its ``deploy_block`` is the first of
        them. Read once from the creations' receipts; ``deploy_block`` when the node no longer
        indexes them (a pruned transaction index). Blocking."""
        try:
            return max(
                int(self.w3.eth.get_transaction_receipt(HexStr(record.deploy_tx))["blockNumber"])
                for record in self.deployment.contracts.values()
            )
        except TransactionNotFound:
            return self.deployment.deploy_block

    # --- roles ----------------------------------------------------------------------------------

    def missing_service_roles(self, account: str) -> list[tuple[str, str, str]]:
        """The roles the service's own transactions need that ``account`` does not hold on chain:
        (contract, role, what the service does with it), in ``SERVICE_ROLES`` order."""
        bound = (self.registry, self.gate, self.bpc, self.fund, self.devices, self.vault)
        contracts = {contract.name: contract for contract in bound}
        missing = []
        for name, role, purpose in SERVICE_ROLES:
            contract = contracts[name]
            if not contract.call("hasRole", contract.call(role), _addr(account)):
                missing.append((name, role, purpose))
        return missing

    # --- registry -------------------------------------------------------------------------------

    def admit(self, account: str, tier: Tier, *, sender: str | None = None) -> TxReceipt:
        return self.registry.transact("admit", _addr(account), int(tier), sender=sender)

    def set_tier(self, account: str, tier: Tier, *, sender: str | None = None) -> TxReceipt:
        return self.registry.transact("setTier", _addr(account), int(tier), sender=sender)

    def suspend(self, account: str, *, sender: str | None = None) -> TxReceipt:
        return self.registry.transact("suspend", _addr(account), sender=sender)

    def reinstate(self, account: str, *, sender: str | None = None) -> TxReceipt:
        return self.registry.transact("reinstate", _addr(account), sender=sender)

    def expel(self, account: str, *, sender: str | None = None) -> TxReceipt:
        return self.registry.transact("expel", _addr(account), sender=sender)

    def set_tier_reference(self, tier: Tier, reference: str, *, sender: str | None = None) -> TxReceipt:
        return self.registry.transact("setTierReference", int(tier), _addr(reference), sender=sender)

    def tier_reference(self, tier: Tier) -> str:
        return str(self.registry.call("tierReference", int(tier)))

    def member(self, account: str, *, block: BlockIdentifier = "latest") -> Member:
        tier, status, admitted_at = self.registry.call("memberOf", _addr(account), block=block)
        return Member(_addr(account), Tier(tier), MemberStatus(status), int(admitted_at))

    # --- BPC ------------------------------------------------------------------------------------

    def mint_bpc(self, to: str, amount_wei: int, *, sender: str | None = None) -> TxReceipt:
        return self.bpc.transact("mint", _addr(to), amount_wei, sender=sender)

    def mint_bpc_once(self, to: str, amount_wei: int, key: str, *, sender: str | None = None) -> TxReceipt:
        """``BPC.mintOnce``: mints under ``key`` (``0x`` + 64 hex digits) once; a reuse reverts."""
        return self.bpc.transact("mintOnce", _addr(to), amount_wei, key, sender=sender)

    def bpc_mint_key_used(self, key: str) -> bool:
        return bool(self.bpc.call("mintKeys", key))

    def transfer_bpc(self, to: str, amount_wei: int, *, sender: str) -> TxReceipt:
        return self.bpc.transact("transfer", _addr(to), amount_wei, sender=sender)

    def approve_bpc(self, spender: str, amount_wei: int, *, sender: str) -> TxReceipt:
        return self.bpc.transact("approve", _addr(spender), amount_wei, sender=sender)

    def vault_tokens(self) -> tuple[str, str]:
        """The Vault's base and quote tokens, as it reports them (EIP-55)."""
        return str(self.vault.call("baseToken")), str(self.vault.call("quoteToken"))

    def bpc_balance(self, account: str, *, block: BlockIdentifier = "latest") -> int:
        return int(self.bpc.call("balanceOf", _addr(account), block=block))

    def bpc_supply(self, *, block: BlockIdentifier = "latest") -> int:
        return int(self.bpc.call("totalSupply", block=block))

    # --- licences -------------------------------------------------------------------------------

    def threshold(self, tier: Tier, *, block: BlockIdentifier = "latest") -> int:
        """BPC (wei) a member of `tier` must lock now: the balance at the tier's reference address."""
        return int(self.gate.call("threshold", int(tier), block=block))

    def acquire(self, amount_wei: int, *, sender: str) -> TxReceipt:
        """Approve the gate and lock `amount_wei` BPC for a BPR (zero for non-profit members)."""
        if amount_wei:
            self.approve_bpc(self.gate.address, amount_wei, sender=sender)
        return self.gate.transact("acquire", amount_wei, sender=sender)

    def release(self, *, sender: str) -> TxReceipt:
        return self.gate.transact("release", sender=sender)

    def fee_licence_terms(self) -> tuple[int, int]:
        """(price in BPC wei, term in seconds)."""
        return int(self.gate.call("feeLicencePrice")), int(self.gate.call("feeLicenceTerm"))

    def set_fee_licence_terms(self, price_wei: int, term_s: int, *, sender: str | None = None) -> TxReceipt:
        return self.gate.transact("setFeeLicenceTerms", price_wei, term_s, sender=sender)

    def buy_fee_licence(self, *, sender: str) -> TxReceipt:
        price_wei, _ = self.fee_licence_terms()
        self.approve_bpc(self.gate.address, price_wei, sender=sender)
        return self.gate.transact("buyFeeLicence", sender=sender)

    def renew_fee_licence(self, *, sender: str) -> TxReceipt:
        price_wei, _ = self.fee_licence_terms()
        self.approve_bpc(self.gate.address, price_wei, sender=sender)
        return self.gate.transact("renewFeeLicence", sender=sender)

    def revoke(self, holder: str, *, sender: str | None = None) -> TxReceipt:
        return self.gate.transact("revoke", _addr(holder), sender=sender)

    def licence(self, holder: str, *, block: BlockIdentifier = "latest") -> Licence:
        record: Any = self.bpr.call("licenceOf", _addr(holder), block=block)
        token_id, kind, tier, expires_at, since_block, locked = record
        licensed = bool(self.bpr.call("isLicensed", _addr(holder), block=block))
        return Licence(
            holder=_addr(holder),
            token_id=int(token_id),
            kind=LicenceKind(kind),
            tier=Tier(tier),
            expires_at=int(expires_at),
            since_block=int(since_block),
            locked_bpc_wei=int(locked),
            licensed=licensed,
        )

    def is_licensed(self, holder: str, *, block: BlockIdentifier = "latest") -> bool:
        return bool(self.bpr.call("isLicensed", _addr(holder), block=block))

    def bpr_balance(self, holder: str, *, block: BlockIdentifier = "latest") -> int:
        return int(self.bpr.call("balanceOf", _addr(holder), block=block))


def _addr(account: str) -> str:
    return Web3.to_checksum_address(account)
