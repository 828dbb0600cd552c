"""Pool administration: what every use case shares.

* :class:`ChainGateway` — the pool contracts behind one lock, called in a worker
  thread (web3 blocks), with chain errors turned into domain errors in the one
  place that does that (``exchange.chain.problems``). The lock also keeps the
  embedded EVM, which is not thread-safe, to one caller at a time.
* :class:`PoolContext` — settings, chain, session factory, indexer and the
  published policies of one running service (``app.state.pool``).
* Foundation roles: who is council, registrar or assessor; bootstrapped from
  the settings at start-up and managed by the council.
* The audit log: :func:`record_audit` appends one entry per admin action, with
  before and after snapshots and the transactions it sent.

Error tree of the pool services (all from ``exchange.kit.errors``):
``Forbidden`` (403) a signed-in caller without the role; ``NotFound`` (404);
``Conflict`` (409) a state clash, including ``IllegalTransition``;
``ValidationFailed`` (422) including ``InvalidPatentNumber``; ``ChainRejected``
(409) a revert; ``ChainUnavailable`` (503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from web3.exceptions import Web3Exception

from exchange.api.request_context import current_request_id
from exchange.chain import errors as chain_errors
from exchange.chain.pool import PoolChain
from exchange.chain.problems import to_domain_error
from exchange.chain.runtime import ChainRuntime
from exchange.kit.errors import Conflict, Forbidden, NotFound
from exchange.kit.logging import get_logger
from exchange.pool import repository
from exchange.pool.assessments import AdmissionPolicy
from exchange.pool.contributions import MintPolicy
from exchange.pool.models import (
    AuditEntry,
    FoundationRole,
    FoundationRoleGrant,
    Member,
    MembershipApplication,
    PatentRecord,
)
from exchange.settings import Settings

if TYPE_CHECKING:
    from exchange.pool.indexer import PoolIndexer

log = get_logger(__name__)
T = TypeVar("T")

SETTINGS_ACTOR = "settings"


class ChainGateway:
    """The pool contracts, one call at a time, off the event loop."""

    def __init__(self, runtime: ChainRuntime) -> None:
        self.runtime = runtime
        self._lock = asyncio.Lock()

    @property
    def pool(self) -> PoolChain:
        return self.runtime.pool

    async def run(self, action: Callable[[], T]) -> T:
        """Run blocking web3 code; raise ``ChainRejected`` or ``ChainUnavailable`` on failure."""
        async with self._lock:
            try:
                return await asyncio.to_thread(action)
            except chain_errors.ChainError as exc:
                raise to_domain_error(exc) from exc
            except (OSError, Web3Exception) as exc:  # raw w3 calls (logs, blocks) outside BoundContract
                raise to_domain_error(chain_errors.ChainUnavailable(str(exc))) from exc


@dataclass(frozen=True)
class PoolPolicies:
    """The published policies: which patents enter the pool, and what a contribution mints."""

    admission: AdmissionPolicy
    mint: MintPolicy

    @classmethod
    def from_settings(cls, settings: Settings) -> PoolPolicies:
        return cls(
            admission=AdmissionPolicy(
                min_assessments=settings.pool_admission_min_assessments,
                min_mean_score=settings.pool_admission_min_mean_score,
                require_core_majority=settings.pool_admission_require_core_majority,
            ),
            mint=MintPolicy(
                version=settings.pool_mint_policy_version,
                base_amount_wei=settings.pool_mint_base_amount_wei,
            ),
        )


@dataclass(frozen=True)
class PoolContext:
    """Everything the pool's use cases need from the running service."""

    settings: Settings
    chain: ChainGateway
    sessionmaker: async_sessionmaker[AsyncSession]
    indexer: PoolIndexer
    policies: PoolPolicies

    @property
    def resend_after_s(self) -> int:
        """How long a sent-but-unseen transaction waits before it is sent again.

        The embedded EVM mines each transaction before answering, so a transaction
        not found on it was never mined; a remote node may still hold one in its mempool.
        """
        return 0 if self.chain.runtime.embedded else self.settings.pool_mint_resend_after_s


# --------------------------------------------------------------------------- audit log


def snapshot(value: Any) -> Any:
    """A JSON-safe copy of a row or value, for the audit log's before and after."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): snapshot(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [snapshot(item) for item in value]
    columns = getattr(getattr(value, "__table__", None), "columns", None)
    if columns is not None:
        return {column.key: snapshot(getattr(value, column.key)) for column in columns}
    return str(value)


async def record_audit(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    at: datetime,
    before: Any = None,
    after: Any = None,
    tx_hashes: Iterable[str] = (),
    reason: str | None = None,
) -> AuditEntry:
    """Append one entry to the audit log (in the caller's transaction)."""
    entry = await repository.append_audit(
        session,
        AuditEntry(
            occurred_at=at,
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            before=snapshot(before),
            after=snapshot(after),
            tx_hashes=list(tx_hashes),
            reason=reason,
            request_id=current_request_id(),
        ),
    )
    log.info("audit.recorded", action=action, actor=actor, subject_id=subject_id, audit_id=entry.id)
    return entry


def member_snapshot(member: Member | None) -> dict[str, Any] | None:
    return None if member is None else snapshot(member)


def application_snapshot(application: MembershipApplication) -> dict[str, Any]:
    result: dict[str, Any] = snapshot(application)
    return result


def patent_snapshot(patent: PatentRecord) -> dict[str, Any]:
    result: dict[str, Any] = snapshot(patent)
    return result


# --------------------------------------------------------------------------- foundation roles


async def require_roles(
    session: AsyncSession, address: str, allowed: Iterable[FoundationRole]
) -> set[FoundationRole]:
    """The caller's roles, if one of them is allowed; ``Forbidden`` otherwise."""
    wanted = set(allowed)
    held = await repository.active_roles(session, address)
    if not held & wanted:
        names = " or ".join(sorted(role.value for role in wanted))
        raise Forbidden(
            f"{address} does not hold the {names} role",
            extra={"required_roles": sorted(role.value for role in wanted)},
        )
    return held


async def grant_role(
    session: AsyncSession,
    *,
    address: str,
    role: FoundationRole,
    actor: str,
    at: datetime,
    reason: str | None = None,
) -> tuple[FoundationRoleGrant, bool]:
    """Grant ``role`` to ``address``; granting a role already held returns the live grant."""
    existing = await repository.active_grant(session, address, role)
    if existing is not None:
        return existing, False
    grant = await repository.add_role_grant(session, address, role, actor, at)
    await record_audit(
        session,
        actor=actor,
        action="role.grant",
        subject_type="foundation_role",
        subject_id=f"{role.value}:{address}",
        at=at,
        after=grant,
        reason=reason,
    )
    log.info("pool.role_granted", address=address, role=role.value, actor=actor)
    return grant, True


async def revoke_role(
    session: AsyncSession,
    *,
    address: str,
    role: FoundationRole,
    actor: str,
    at: datetime,
    reason: str | None = None,
) -> FoundationRoleGrant:
    """Revoke a held role. The last council member cannot be removed: nobody could grant roles again.

    The council's grants are locked before they are counted, so two members revoking each other
    at once cannot both see the other still there.
    """
    if role is FoundationRole.COUNCIL:
        council = await repository.lock_active_grants(session, role)
        if len(council) <= 1 and any(grant.address == address for grant in council):
            raise Conflict(f"{address} is the last council member; grant the role to another address first")
    grant = await repository.active_grant(session, address, role)
    if grant is None:
        raise NotFound(f"{address} does not hold the {role.value} role")
    await _revoke(session, grant, actor=actor, at=at, reason=reason)
    return grant


async def _revoke(
    session: AsyncSession, grant: FoundationRoleGrant, *, actor: str, at: datetime, reason: str | None
) -> None:
    before = snapshot(grant)
    await repository.revoke_role_grant(session, grant, actor, at)
    await record_audit(
        session,
        actor=actor,
        action="role.revoke",
        subject_type="foundation_role",
        subject_id=f"{grant.role}:{grant.address}",
        at=at,
        before=before,
        after=grant,
        reason=reason,
    )
    log.info("pool.role_revoked", address=grant.address, role=grant.role, actor=actor)


async def bootstrap_roles(session: AsyncSession, settings: Settings, at: datetime) -> None:
    """Make the roles granted by the settings match them: grant the listed, revoke the dropped.

    Grants made by the council through the API are left alone, and so are its revocations: a
    listed address whose latest grant of the role the council revoked (a lost key, say) is not
    granted it again at the next start. The council grants it again through the API if it should.
    """
    configured = {
        FoundationRole.COUNCIL: settings.council_addresses,
        FoundationRole.REGISTRAR: settings.registrar_addresses,
        FoundationRole.ASSESSOR: settings.assessor_addresses,
    }
    wanted = {(address, role) for role, addresses in configured.items() for address in addresses}
    latest = {  # the newest grant of each address and role, live or revoked
        (grant.address, FoundationRole(grant.role)): grant
        for grant in await repository.role_grants(session, include_revoked=True)
    }
    for address, role in sorted(wanted):
        newest = latest.get((address, role))
        if newest is not None and newest.revoked_at is not None and newest.revoked_by != SETTINGS_ACTOR:
            log.warning(
                "pool.configured_role_stays_revoked",
                address=address,
                role=role.value,
                revoked_by=newest.revoked_by,
                revoked_at=newest.revoked_at.isoformat(),
            )
            continue
        await grant_role(
            session, address=address, role=role, actor=SETTINGS_ACTOR, at=at, reason="configured"
        )
    council = len(await repository.lock_active_grants(session, FoundationRole.COUNCIL))
    for grant in await repository.role_grants(session):
        role = FoundationRole(grant.role)
        if grant.granted_by == SETTINGS_ACTOR and (grant.address, role) not in wanted:
            if role is FoundationRole.COUNCIL:
                if council <= 1:  # as through the API: nobody could grant roles again
                    log.error("pool.last_council_member_kept", address=grant.address)
                    continue
                council -= 1
            await _revoke(session, grant, actor=SETTINGS_ACTOR, at=at, reason="no longer configured")
