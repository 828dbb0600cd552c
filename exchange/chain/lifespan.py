"""The service's chain start-up: connect, deploy or load the pool, record it, watch it.

Start-up work is blocking web3 code, so it runs in a worker thread; the
deployment is recorded in ``chain_deployments`` and kept on ``app.state.chain``.

On a JSON-RPC chain the pool is kept in a manifest: the configured one
(``deployment_manifest``), else ``deployments/manifest.json`` in the working directory, the
default of the ``exchange`` commands. The first start deploys the pool and writes it; every
later start loads it. The embedded chain is new at every start and keeps no manifest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession
from web3.exceptions import BlockNotFound

from exchange.api.system_routes import register_health_check
from exchange.chain.deployment import manifest_unwritable
from exchange.chain.errors import ChainReplaced, ManifestInvalid
from exchange.chain.manifest_defaults import DEFAULT_MANIFEST
from exchange.chain.runtime import ChainRuntime, start_chain
from exchange.db.deployments import chain_anchor, record_deployment, recorded_chain_anchor
from exchange.db.models import ChainAnchor
from exchange.kit.logging import get_logger
from exchange.settings import Settings

log = get_logger(__name__)


def chain_startup(runtime: ChainRuntime | None = None) -> Callable[[FastAPI], Awaitable[None]]:
    """Lifespan hook: bring the chain up (or use `runtime`) and record the deployment in use."""

    async def hook(app: FastAPI) -> None:
        settings: Settings = app.state.settings
        started = runtime if runtime is not None else await _start_from_settings(app, settings)
        await _adopt(app, started)

    return hook


def service_manifest(settings: Settings) -> Path | None:
    """The manifest the service loads its pool from, or writes once it deployed one: the
    configured one, else the commands' default (``deployments/manifest.json``, relative to the
    working directory). None on the embedded chain, which is new at every start."""
    if settings.chain_rpc_url is None:
        return None
    return settings.deployment_manifest or DEFAULT_MANIFEST


async def _start_from_settings(app: FastAPI, settings: Settings) -> ChainRuntime:
    manifest = service_manifest(settings)
    if manifest is not None and manifest.is_dir():
        raise ManifestInvalid(
            f"{manifest} is a directory: EXCHANGE_DEPLOYMENT_MANIFEST names the manifest file itself"
        )
    if manifest is not None and not manifest.is_file():
        await _refuse_a_deployment_for_an_anchored_database(app, manifest)
        _refuse_an_unwritable_manifest(manifest)
    key = settings.operator_private_key.get_secret_value() if settings.operator_private_key else None
    return await asyncio.to_thread(
        start_chain, settings.chain_rpc_url, operator_key=key, manifest_path=manifest
    )


def _refuse_an_unwritable_manifest(manifest: Path) -> None:
    """Raise ``ManifestInvalid`` when the manifest a deployment would write cannot be written:
    checked before the deployment, which the operator would otherwise pay for at every start."""
    unwritable = manifest_unwritable(manifest)
    if unwritable is not None:
        raise ManifestInvalid(
            f"a pool deployed now could not be recorded at {manifest} ({unwritable}), so none "
            "was: make that directory writable, or name another path (EXCHANGE_DEPLOYMENT_MANIFEST)"
        )


async def _refuse_a_deployment_for_an_anchored_database(app: FastAPI, manifest: Path) -> None:
    """Raise ``ChainReplaced`` when the database already belongs to a pool: one deployed now
    would be another (in a later block), and the start would be refused after paying for it."""
    async with app.state.db_sessionmaker() as session:
        anchor = await recorded_chain_anchor(session)
    if anchor is not None:
        raise ChainReplaced(
            f"this database belongs to chain {anchor.chain_id} with the pool deployed in block "
            f"{anchor.deploy_block} ({anchor.block_hash}), and there is no manifest at {manifest} "
            "to load that pool from; a pool deployed now would be another one, so none was. Name "
            "that pool's manifest (EXCHANGE_DEPLOYMENT_MANIFEST), or start on a new database (DATABASE_URL)"
        )


async def check_chain_anchor(session: AsyncSession, runtime: ChainRuntime, *, record: bool) -> None:
    """Raise ``ChainReplaced`` unless this database belongs to ``runtime``'s chain.

    ``record``: a database that names no chain yet is given this one (a service's start);
    otherwise (a command working beside the service) such a database is taken as it is.
    """
    deployment = runtime.deployment
    w3 = runtime.w3
    try:
        block_hash = await runtime.run(
            lambda: "0x" + bytes(w3.eth.get_block(deployment.deploy_block)["hash"]).hex()
        )
    except BlockNotFound:
        raise ChainReplaced(
            f"the pool was deployed in block {deployment.deploy_block} of chain {deployment.chain_id}, "
            "which this node does not have: a node still syncing (wait until it has caught up), or "
            "another chain of that id (a development node that restarted starts over: use the node "
            "of the chain the deployment manifest describes, or deploy again on a new database)"
        ) from None
    found = (deployment.chain_id, deployment.deploy_block, block_hash)
    if record:
        anchor: ChainAnchor | None = await chain_anchor(session, *found)
    else:
        anchor = await recorded_chain_anchor(session)
    if anchor is not None and (anchor.chain_id, anchor.deploy_block, anchor.block_hash) != found:
        raise ChainReplaced(
            f"this database belongs to chain {anchor.chain_id} with the pool deployed in block "
            f"{anchor.deploy_block} ({anchor.block_hash}), but the pool found was deployed in block "
            f"{deployment.deploy_block} ({block_hash}) of chain {deployment.chain_id}. The balances, "
            "orders and members stored here describe the other chain: start on a new database "
            "(DATABASE_URL), or on the chain it belongs to"
        )


async def _adopt(app: FastAPI, runtime: ChainRuntime) -> None:
    app.state.chain = runtime
    deployment = runtime.deployment
    async with app.state.db_sessionmaker() as session, session.begin():
        await check_chain_anchor(session, runtime, record=True)
        await record_deployment(session, deployment.chain_id, deployment.deploy_block, deployment.to_json())

    async def chain_reachable() -> None:
        await asyncio.to_thread(lambda: runtime.w3.eth.block_number)

    register_health_check(app, "chain", chain_reachable)
    operator = str(runtime.w3.eth.default_account)
    for contract, role, purpose in await runtime.run(lambda: runtime.pool.missing_service_roles(operator)):
        log.warning(
            "chain.operator_role_missing",
            contract=contract,
            role=role,
            operator=operator,
            refused=f"the contract will refuse the service's transactions for {purpose}",
        )
    log.info(
        "chain.ready",
        chain_id=runtime.deployment.chain_id,
        embedded=runtime.embedded,
        licence_gate=runtime.deployment.address("LicenseGate"),
    )
