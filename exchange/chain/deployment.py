"""Deploy the pool contracts, wire their roles, and describe the result.

Role wiring (mirrors ``scripts/lib/deploy-pool.js``, used by the Hardhat tests):

- the council holds ``DEFAULT_ADMIN_ROLE`` on every contract (it deploys them);
- ``BPR.GATE_ROLE`` → LicenseGate (only the gate grants and ends licences);
- ``LicenseGate.REVOKER_ROLE`` → registrar (revokes licences of expelled members);
- ``PoolRegistry.REGISTRAR_ROLE`` → registrar;
- ``BPC.MINTER_ROLE`` → minter (mints BPC when patents are admitted);
- ``Fund.TREASURER_ROLE`` → treasurer (pays royalties);
- ``DeviceLicenses.REVOKER_ROLE`` → registrar (revokes devices, suspends batches);
- ``Vault.OPERATOR_ROLE`` → operator (settles trade batches, co-signs withdrawals).

The Vault trades BPC against a quote token: the dev ``QuoteToken`` when it is
deployed (dev and test chains), otherwise the stablecoin given as ``quote_token``.
Its fees go to the Fund and only active PoolRegistry members trade.

A deployment is described by a manifest (chain id, deploy block, addresses,
ABI hashes, roles), written by ``exchange deploy`` and checked by
``exchange chain status``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog
from web3 import Web3

from exchange.chain.binding import BoundContract
from exchange.chain.compiler import Artifact, compile_contracts
from exchange.chain.errors import ChainUnavailable, DeploymentMismatch, ErrorDecoder, ManifestInvalid
from exchange.kit.addresses import address_refusal
from exchange.kit.errors import error_line

log = structlog.get_logger(__name__)

POOL_CONTRACTS = ("PoolRegistry", "BPC", "BPR", "Fund", "LicenseGate", "DeviceLicenses", "Vault")
DEV_CONTRACTS = ("QuoteToken",)
MANIFEST_VERSION = 1
DEFAULT_EXIT_DELAY_S = 3 * 24 * 60 * 60
"""The Vault's escape-hatch delay unless the deployer chooses another (at most 30 days)."""


def manifest_unwritable(path: Path) -> str | None:
    """Why a manifest could not be written to ``path``, else None, found before anything is
    deployed: its folder is made, and a temporary file is opened beside it and removed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            return "it is a directory"
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"):
            pass
    except OSError as exc:
        return error_line(exc)
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is read-only"
    return None


@dataclass(frozen=True)
class ContractRecord:
    address: str
    abi_sha256: str
    deploy_tx: str


@dataclass(frozen=True)
class Deployment:
    """What was deployed where: the manifest of one pool deployment."""

    chain_id: int
    deploy_block: int
    deployer: str
    contracts: dict[str, ContractRecord]
    roles: dict[str, str] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def address(self, name: str) -> str:
        return self.contracts[name].address

    def missing(self) -> list[str]:
        """The pool contracts this manifest does not name (none, for one `deploy_pool` wrote)."""
        return [name for name in POOL_CONTRACTS if name not in self.contracts]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Deployment:
        if data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"unsupported manifest version {data.get('version')!r}")
        contracts = {name: ContractRecord(**record) for name, record in data["contracts"].items()}
        for name, record in contracts.items():
            refusal = address_refusal(str(record.address))  # JSON may hold anything there
            if refusal is not None:
                raise ValueError(f"the address of {name}, {record.address!r}, {refusal}")
        return cls(
            chain_id=int(data["chain_id"]),
            deploy_block=int(data["deploy_block"]),
            deployer=str(data["deployer"]),
            contracts=contracts,
            roles={str(k): str(v) for k, v in data.get("roles", {}).items()},
        )

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> Deployment:
        """The manifest in ``path``; ``ManifestInvalid`` naming the file when this version cannot read it."""
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSON errors are ValueErrors
            raise ManifestInvalid(f"{path} is not a deployment manifest this version reads: {exc!r}") from exc


@dataclass(frozen=True)
class RolePlan:
    """Who receives which foundation role; every default is the deployer (the council)."""

    registrar: str | None = None
    minter: str | None = None
    treasurer: str | None = None
    operator: str | None = None


def error_decoder(artifacts: Mapping[str, Artifact]) -> ErrorDecoder:
    return ErrorDecoder(artifact.abi for artifact in artifacts.values())


def _deploy(
    w3: Web3, artifact: Artifact, *args: Any, sent: Callable[[str], None] = lambda _hash: None
) -> tuple[str, str, int]:
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx_hash = factory.constructor(*args).transact({"from": w3.eth.default_account})
    sent("0x" + bytes(tx_hash).hex())  # before the wait: a receipt that never comes loses nothing
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    address = receipt["contractAddress"]
    if receipt["status"] != 1 or address is None:
        raise ChainUnavailable(f"deployment of {artifact.name} failed in tx {tx_hash.hex()}")
    return Web3.to_checksum_address(address), "0x" + bytes(tx_hash).hex(), int(receipt["blockNumber"])


def deploy_pool(
    w3: Web3,
    *,
    roles: RolePlan | None = None,
    with_quote_token: bool = True,
    quote_token: str | None = None,
    exit_delay_s: int = DEFAULT_EXIT_DELAY_S,
    artifacts: Mapping[str, Artifact] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Deployment:
    """Deploy the pool contracts from `w3.eth.default_account` (the council) and wire roles.

    `with_quote_token` adds a freely mintable test stablecoin (dev and test chains only),
    which becomes the Vault's quote token; otherwise `quote_token` names the stablecoin
    the Vault trades against. Exactly one of the two is required.
    """
    if with_quote_token == (quote_token is not None):
        raise ValueError("the Vault needs one quote token: a deployed test token or an existing address")
    artifacts = artifacts or compile_contracts()
    decoder = error_decoder(artifacts)
    council = Web3.to_checksum_address(str(w3.eth.default_account))
    plan = roles or RolePlan()
    registrar = Web3.to_checksum_address(plan.registrar or council)
    minter = Web3.to_checksum_address(plan.minter or council)
    treasurer = Web3.to_checksum_address(plan.treasurer or council)
    operator = Web3.to_checksum_address(plan.operator or council)
    # Every address is checked before the first transaction: none is paid for in vain.
    given_quote = None if with_quote_token else Web3.to_checksum_address(str(quote_token))
    report = progress or (lambda _message: None)

    records: dict[str, ContractRecord] = {}
    blocks: list[int] = []

    def deploy(name: str, artifact_name: str, *args: Any) -> str:
        address, tx, block = _deploy(
            w3,
            artifacts[artifact_name],
            *args,
            sent=lambda tx: report(f"deploying {name} in transaction {tx}"),
        )
        blocks.append(block)
        records[name] = ContractRecord(
            address=address, abi_sha256=artifacts[artifact_name].abi_sha256, deploy_tx=tx
        )
        log.info("chain.contract_deployed", contract=name, address=address)
        # As it happens: a deployment that stops midway leaves the record of what it paid for.
        report(f"deployed {name} at {address}")
        return address

    registry = deploy("PoolRegistry", "PoolRegistry", council)
    bpc = deploy("BPC", "BPC", council)
    bpr = deploy("BPR", "BPR", council)
    fund = deploy("Fund", "Fund", council)
    gate = deploy("LicenseGate", "LicenseGate", council, bpc, bpr, registry, fund)
    deploy("DeviceLicenses", "DeviceLicenses", council, bpc, bpr, registry)
    quote = deploy("QuoteToken", "TestToken", "Test USD", "TUSD", 6) if given_quote is None else given_quote
    deploy("Vault", "Vault", council, bpc, quote, registry, fund, exit_delay_s)

    def bound(name: str, artifact_name: str) -> BoundContract:
        return BoundContract(w3, name, records[name].address, artifacts[artifact_name].abi, decoder)

    grants = [
        ("BPR", "GATE_ROLE", gate),
        ("LicenseGate", "REVOKER_ROLE", registrar),
        ("PoolRegistry", "REGISTRAR_ROLE", registrar),
        ("BPC", "MINTER_ROLE", minter),
        ("Fund", "TREASURER_ROLE", treasurer),
        ("DeviceLicenses", "REVOKER_ROLE", registrar),
        ("Vault", "OPERATOR_ROLE", operator),
    ]
    role_map: dict[str, str] = {"council": council}
    for contract_name, role, account in grants:
        report(f"granting {contract_name}.{role}")
        contract = bound(contract_name, contract_name)
        contract.transact("grantRole", contract.call(role), account)
        role_map[f"{contract_name}.{role}"] = account

    return Deployment(
        chain_id=w3.eth.chain_id,
        deploy_block=min(blocks),
        deployer=council,
        contracts=records,
        roles=role_map,
    )


def _masked(code: bytes, immutable_references: Mapping[str, list[dict[str, int]]]) -> bytes:
    """Runtime code with immutable slots zeroed, comparable to the compiler's output."""
    buffer = bytearray(code)
    for references in immutable_references.values():
        for ref in references:
            start, length = ref["start"], ref["length"]
            buffer[start : start + length] = bytes(length)
    return bytes(buffer)


@dataclass(frozen=True)
class ContractStatus:
    name: str
    address: str
    ok: bool
    reason: str


def check_deployment(
    w3: Web3, deployment: Deployment, artifacts: Mapping[str, Artifact] | None = None
) -> list[ContractStatus]:
    """Compare the code at every manifest address with the compiled contract."""
    artifacts = artifacts or compile_contracts()
    if w3.eth.chain_id != deployment.chain_id:
        raise DeploymentMismatch(
            f"manifest is for chain {deployment.chain_id}, node is chain {w3.eth.chain_id}"
        )
    statuses = [ContractStatus(name, "-", False, "not in the manifest") for name in deployment.missing()]
    for name, record in deployment.contracts.items():
        artifact = artifacts.get("TestToken" if name == "QuoteToken" else name)
        if artifact is None:
            statuses.append(ContractStatus(name, record.address, False, "no contract of that name here"))
            continue
        code = bytes(w3.eth.get_code(Web3.to_checksum_address(record.address)))
        expected = bytes.fromhex(artifact.deployed_bytecode[2:])
        if not code:
            statuses.append(ContractStatus(name, record.address, False, "no code at address"))
        elif _masked(code, artifact.immutable_references) != _masked(expected, artifact.immutable_references):
            statuses.append(
                ContractStatus(name, record.address, False, "code differs from compiled contract")
            )
        elif record.abi_sha256 != artifact.abi_sha256:
            statuses.append(ContractStatus(name, record.address, False, "ABI changed since deployment"))
        else:
            statuses.append(ContractStatus(name, record.address, True, "code matches"))
    return statuses
