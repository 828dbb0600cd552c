"""``/v1/contracts``: the deployment the service runs against."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from exchange.api.dependencies import limit_chain_reads
from exchange.api.problems import problem_responses
from exchange.chain.runtime import ChainRuntime
from exchange.chain.schemas import ContractInfo, DeploymentInfo
from exchange.kit.errors import RateLimited

router = APIRouter(prefix="/v1", tags=["chain"])


def chain_runtime(request: Request) -> ChainRuntime:
    runtime: ChainRuntime = request.app.state.chain
    return runtime


@router.get(
    "/contracts",
    response_model=DeploymentInfo,
    summary="Pool contract deployment",
    responses=problem_responses(RateLimited),
    # It asks the node for its head block: the client IP's chain-read bucket first.
    dependencies=[Depends(limit_chain_reads)],
)
async def get_contracts(request: Request) -> DeploymentInfo:
    """Chain id, contract addresses, deploy block and role holders of the pool in use."""
    runtime = chain_runtime(request)
    deployment = runtime.deployment
    head = await asyncio.to_thread(lambda: int(runtime.w3.eth.block_number))
    return DeploymentInfo(
        chain_id=deployment.chain_id,
        deploy_block=deployment.deploy_block,
        deployer=deployment.deployer,
        embedded=runtime.embedded,
        head_block=head,
        contracts=[
            ContractInfo(
                name=name, address=record.address, abi_sha256=record.abi_sha256, deploy_tx=record.deploy_tx
            )
            for name, record in deployment.contracts.items()
        ],
        roles=deployment.roles,
    )
