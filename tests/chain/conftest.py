"""Fixtures: a deployed pool on the embedded EVM and on a Hardhat node.

Each backend deploys once per session; every test runs inside an EVM
snapshot that is reverted afterwards, so tests never see each other's state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from web3 import Web3

from exchange.chain.deployment import Deployment, deploy_pool
from exchange.chain.pool import PoolChain
from exchange.chain.provider import make_web3
from tests.chain.nodes import hardhat_node


@dataclass
class Chain:
    w3: Web3
    deployment: Deployment
    pool: PoolChain
    backend: str

    @property
    def accounts(self) -> list[str]:
        return [Web3.to_checksum_address(a) for a in self.w3.eth.accounts]


@pytest.fixture(scope="session")
def hardhat_url() -> Iterator[str]:
    with hardhat_node() as url:
        yield url


def _deploy(w3: Web3, backend: str) -> Chain:
    deployment = deploy_pool(w3)
    return Chain(w3=w3, deployment=deployment, pool=PoolChain(w3, deployment), backend=backend)


@pytest.fixture(scope="session")
def embedded_chain() -> Chain:
    return _deploy(make_web3(), "embedded")


@pytest.fixture(scope="session")
def hardhat_chain(hardhat_url: str) -> Chain:
    return _deploy(make_web3(hardhat_url), "hardhat")


@pytest.fixture(params=["embedded", pytest.param("hardhat", marks=pytest.mark.hardhat)])
def chain(request: pytest.FixtureRequest) -> Iterator[Chain]:
    """A freshly deployed pool, on each backend in turn, reverted after the test."""
    deployed: Chain = request.getfixturevalue(f"{request.param}_chain")
    snapshot = deployed.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield deployed
    finally:
        deployed.w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]
