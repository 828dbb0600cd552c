"""Repository of contract deployments (``chain_deployments``): all SQL for them lives here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.db.models import ChainAnchor, ChainDeployment
from exchange.kit.errors import Conflict, ValidationFailed
from exchange.kit.logging import get_logger

log = get_logger(__name__)


def manifest_sha256(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON: sorted keys, no insignificant whitespace, UTF-8."""
    canonical = json.dumps(
        manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def record_deployment(
    session: AsyncSession,
    chain_id: int,
    deploy_block: int,
    manifest: Mapping[str, Any],
) -> ChainDeployment:
    """Record a deployment, or return the row already recorded for the same manifest.

    Raises ``Conflict`` when that manifest was recorded for another chain or
    block, and ``ValidationFailed`` for a non-positive chain id or a negative
    block. Flushes; the caller's transaction boundary commits.
    """
    if chain_id <= 0:
        raise ValidationFailed(f"chain id must be positive, got {chain_id}")
    if deploy_block < 0:
        raise ValidationFailed(f"deploy block must not be negative, got {deploy_block}")
    digest = manifest_sha256(manifest)

    existing = await _by_digest(session, digest)
    if existing is None:
        row = ChainDeployment(
            chain_id=chain_id,
            deploy_block=deploy_block,
            manifest=dict(manifest),
            manifest_sha256=digest,
        )
        try:
            # A savepoint, so that losing a race with a concurrent writer of the same
            # manifest leaves the caller's transaction usable.
            async with session.begin_nested():
                session.add(row)
        except IntegrityError:
            existing = await _by_digest(session, digest)
            if existing is None:
                raise
        else:
            log.info(
                "deployment.recorded",
                deployment_id=row.id,
                chain_id=chain_id,
                deploy_block=deploy_block,
                manifest_sha256=digest,
            )
            return row

    if (existing.chain_id, existing.deploy_block) != (chain_id, deploy_block):
        raise Conflict(
            f"this manifest is already recorded for chain {existing.chain_id} at block "
            f"{existing.deploy_block}, not chain {chain_id} at block {deploy_block}",
            extra={"deployment_id": existing.id, "manifest_sha256": digest},
        )
    return existing


async def latest_deployment(session: AsyncSession, chain_id: int) -> ChainDeployment | None:
    """The deployment on ``chain_id`` made at the highest block (latest recorded among equals)."""
    statement = (
        select(ChainDeployment)
        .where(ChainDeployment.chain_id == chain_id)
        .order_by(ChainDeployment.deploy_block.desc(), ChainDeployment.id.desc())
        .limit(1)
    )
    result: ChainDeployment | None = await session.scalar(statement)
    return result


async def chain_anchor(
    session: AsyncSession, chain_id: int, deploy_block: int, block_hash: str
) -> ChainAnchor:
    """The chain this database belongs to; recorded as the one given when none is yet.

    The row is locked for the caller's transaction, so that two first starts record one anchor.
    """
    row: ChainAnchor | None = await session.scalar(select(ChainAnchor).with_for_update())
    if row is None:
        try:
            async with session.begin_nested():
                row = ChainAnchor(id=1, chain_id=chain_id, deploy_block=deploy_block, block_hash=block_hash)
                session.add(row)
        except IntegrityError:  # another process recorded it first
            row = await session.scalar(select(ChainAnchor).with_for_update())
            if row is None:
                raise
        else:
            log.info(
                "deployment.chain_anchored", chain_id=chain_id, block=deploy_block, block_hash=block_hash
            )
    return row


async def recorded_chain_anchor(session: AsyncSession) -> ChainAnchor | None:
    """The chain this database belongs to, if a service has started on it."""
    row: ChainAnchor | None = await session.scalar(select(ChainAnchor))
    return row


async def _by_digest(session: AsyncSession, digest: str) -> ChainDeployment | None:
    result: ChainDeployment | None = await session.scalar(
        select(ChainDeployment).where(ChainDeployment.manifest_sha256 == digest)
    )
    return result
