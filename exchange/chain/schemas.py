"""API shapes of the chain room."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ContractInfo(BaseModel):
    name: str = Field(examples=["LicenseGate"])
    address: str = Field(description="EIP-55 checksummed address.")
    abi_sha256: str = Field(description="SHA-256 of the contract's ABI JSON (sorted keys).")
    deploy_tx: str


class DeploymentInfo(BaseModel):
    """Where the pool contracts live: everything a client needs to verify against the chain."""

    chain_id: int
    deploy_block: int
    deployer: str
    embedded: bool = Field(description="True when the service runs its own in-process EVM.")
    head_block: int = Field(description="The chain's latest block when this answer was made.")
    contracts: list[ContractInfo]
    roles: dict[str, str] = Field(description="Role → holder address, as wired at deployment.")
