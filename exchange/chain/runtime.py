"""Bring up the chain side of the service: connect, then deploy or load the pool.

With no RPC URL the service runs on the embedded in-process EVM and deploys a
fresh pool at every start, keeping no manifest. With an RPC URL it loads the
deployment manifest it is given when the file is there (checking the code at
every address), and otherwise deploys and writes it there. The service always
gives one (``exchange.chain.lifespan.service_manifest``), so its later starts
load the pool its first start deployed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog
from web3 import Web3

from exchange.chain.compiler import compile_contracts
from exchange.chain.deployment import Deployment, RolePlan, check_deployment, deploy_pool
from exchange.chain.errors import DeploymentMismatch
from exchange.chain.pool import PoolChain
from exchange.chain.provider import make_web3

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ChainRuntime:
    """The chain a running service talks to."""

    w3: Web3
    deployment: Deployment
    pool: PoolChain
    embedded: bool

    async def run(self, action: Callable[[], T]) -> T:
        """Run blocking chain code: inline on the embedded EVM, in a worker thread for a node.

        The in-process EVM is not thread-safe: running its calls on the event loop's thread
        serialises them with everything else the process does to it. They take milliseconds.
        """
        if self.embedded:
            return action()
        return await asyncio.to_thread(action)


def start_chain(
    rpc_url: str | None,
    *,
    operator_key: str | None = None,
    manifest_path: Path | None = None,
    roles: RolePlan | None = None,
) -> ChainRuntime:
    """Connect to the chain and make sure the pool contracts are there."""
    artifacts = compile_contracts()
    w3 = make_web3(rpc_url, operator_key=operator_key)
    deployment: Deployment | None = None
    if rpc_url and manifest_path and manifest_path.is_file():
        deployment = Deployment.read(manifest_path)
        failures = [s for s in check_deployment(w3, deployment, artifacts) if not s.ok]
        if failures:
            details = "; ".join(f"{s.name} at {s.address}: {s.reason}" for s in failures)
            raise DeploymentMismatch(f"manifest {manifest_path} does not match the chain: {details}")
        log.info(
            "chain.deployment_loaded", chain_id=deployment.chain_id, manifest=str(manifest_path.resolve())
        )
    if deployment is None:
        deployment = deploy_pool(w3, roles=roles, artifacts=artifacts)
        log.info("chain.deployment_created", chain_id=deployment.chain_id, block=deployment.deploy_block)
        if rpc_url and manifest_path:
            deployment.write(manifest_path)
            log.info("chain.deployment_written", manifest=str(manifest_path.resolve()))
    return ChainRuntime(
        w3=w3, deployment=deployment, pool=PoolChain(w3, deployment, artifacts), embedded=rpc_url is None
    )
