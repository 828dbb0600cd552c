"""All SQL of pool administration. Flushes only; the caller's transaction commits.

The audit log has an ``append_audit`` and readers, and nothing that updates or
deletes: append-only is enforced here and, underneath, by database triggers.
Status changes that race (two workers picking up one mint) use compare-and-set
UPDATEs whose row count says who won.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, Text, cast, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.db import bulk
from exchange.db.base import utc_now
from exchange.pool.models import (
    ApplicationStatus,
    AssessmentRecord,
    AuditEntry,
    BatchStatus,
    ContributionMint,
    FoundationRole,
    FoundationRoleGrant,
    FundClaim,
    FundDeposit,
    IndexerCursor,
    Member,
    MembershipApplication,
    MintStatus,
    PatentEventRecord,
    PatentRecord,
    PayoutStatus,
    RoyaltyPayout,
    RoyaltyPayoutBatch,
    RoyaltyRun,
    RoyaltyStakeRecord,
)
from exchange.pool.patents import PatentSource, PatentStatus

# --------------------------------------------------------------------------- foundation roles


async def active_roles(session: AsyncSession, address: str) -> set[FoundationRole]:
    rows = await session.scalars(
        select(FoundationRoleGrant.role).where(
            FoundationRoleGrant.address == address, FoundationRoleGrant.revoked_at.is_(None)
        )
    )
    return {FoundationRole(role) for role in rows}


async def active_grant(
    session: AsyncSession, address: str, role: FoundationRole
) -> FoundationRoleGrant | None:
    return await session.scalar(
        select(FoundationRoleGrant).where(
            FoundationRoleGrant.address == address,
            FoundationRoleGrant.role == role.value,
            FoundationRoleGrant.revoked_at.is_(None),
        )
    )


async def role_grants(
    session: AsyncSession, *, include_revoked: bool = False
) -> Sequence[FoundationRoleGrant]:
    statement = select(FoundationRoleGrant).order_by(FoundationRoleGrant.id)
    if not include_revoked:
        statement = statement.where(FoundationRoleGrant.revoked_at.is_(None))
    return (await session.scalars(statement)).all()


async def lock_active_grants(session: AsyncSession, role: FoundationRole) -> Sequence[FoundationRoleGrant]:
    """The live grants of `role`, locked until the transaction ends (PostgreSQL; SQLite serialises
    writers): a concurrent revocation waits, then finds the grants as this transaction left them."""
    return (
        await session.scalars(
            select(FoundationRoleGrant)
            .where(FoundationRoleGrant.role == role.value, FoundationRoleGrant.revoked_at.is_(None))
            .order_by(FoundationRoleGrant.id)
            .with_for_update()
        )
    ).all()


async def add_role_grant(
    session: AsyncSession, address: str, role: FoundationRole, granted_by: str, at: datetime
) -> FoundationRoleGrant:
    grant = FoundationRoleGrant(address=address, role=role.value, granted_by=granted_by, granted_at=at)
    session.add(grant)
    await session.flush()
    return grant


async def revoke_role_grant(session: AsyncSession, grant: FoundationRoleGrant, by: str, at: datetime) -> None:
    grant.revoked_by = by
    grant.revoked_at = at
    await session.flush()


# --------------------------------------------------------------------------- audit log


async def is_audited(session: AsyncSession, tx_hash: str) -> bool:
    """True when an audit entry names the transaction `tx_hash` (a 0x hash: no LIKE wildcards)."""
    found = await session.scalar(
        select(AuditEntry.id).where(cast(AuditEntry.tx_hashes, Text).contains(tx_hash)).limit(1)
    )
    return found is not None


async def append_audit(session: AsyncSession, entry: AuditEntry) -> AuditEntry:
    session.add(entry)
    await session.flush()
    return entry


def _audit_filter(
    statement: Select[AuditEntry], *, action: str | None, actor: str | None, subject_id: str | None
) -> Select[AuditEntry]:
    if action is not None:
        statement = statement.where(AuditEntry.action == action)
    if actor is not None:
        statement = statement.where(AuditEntry.actor == actor)
    if subject_id is not None:
        statement = statement.where(AuditEntry.subject_id == subject_id)
    return statement


async def audit_page(
    session: AsyncSession,
    *,
    before_id: int | None,
    limit: int,
    action: str | None = None,
    actor: str | None = None,
    subject_id: str | None = None,
) -> Sequence[AuditEntry]:
    """Newest first, ``limit`` entries older than ``before_id``."""
    statement = _audit_filter(
        select(AuditEntry).order_by(AuditEntry.id.desc()), action=action, actor=actor, subject_id=subject_id
    )
    if before_id is not None:
        statement = statement.where(AuditEntry.id < before_id)
    return (await session.scalars(statement.limit(limit))).all()


async def audit_stream(
    session: AsyncSession,
    *,
    action: str | None = None,
    actor: str | None = None,
    subject_id: str | None = None,
) -> AsyncIterator[AuditEntry]:
    """Every matching entry, oldest first, read in pages so an export never loads the whole log."""
    after_id = 0
    while True:
        statement = _audit_filter(
            select(AuditEntry).where(AuditEntry.id > after_id).order_by(AuditEntry.id).limit(500),
            action=action,
            actor=actor,
            subject_id=subject_id,
        )
        page = (await session.scalars(statement)).all()
        for entry in page:
            yield entry
        if len(page) < 500:
            return
        after_id = page[-1].id


# --------------------------------------------------------------------------- indexer cursors and members


async def ensure_cursor(session: AsyncSession, name: str, values: Mapping[str, Any]) -> None:
    """Insert the cursor row ``name`` with ``values`` unless it exists (committed or being inserted).

    On PostgreSQL an insert of the same name by a transaction still open waits for that
    transaction, then does nothing if it committed.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(
        insert(IndexerCursor)
        .values(name=name, updated_at=utc_now(), **values)
        .on_conflict_do_nothing(index_elements=[IndexerCursor.name])
    )


async def locked_cursor(session: AsyncSession, name: str) -> IndexerCursor:
    """The cursor row (see :func:`ensure_cursor`), locked until the transaction ends (PostgreSQL;
    SQLite serialises writers)."""
    statement = select(IndexerCursor).where(IndexerCursor.name == name).with_for_update()
    return (await session.execute(statement)).scalar_one()


async def cursor(session: AsyncSession, name: str) -> IndexerCursor | None:
    """The cursor row ``name``, unlocked (None before the first pass)."""
    return await session.get(IndexerCursor, name)


async def cursors(session: AsyncSession) -> Sequence[IndexerCursor]:
    return (await session.scalars(select(IndexerCursor))).all()


async def member(session: AsyncSession, address: str) -> Member | None:
    return await session.get(Member, address)


async def member_statuses(session: AsyncSession, addresses: Iterable[str]) -> dict[str, str]:
    """The status of each of ``addresses`` on the register; one that is not on it is left out."""
    wanted = sorted(set(addresses))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 500):  # stay under the databases' bound-parameter limits
        chunk = wanted[start : start + 500]
        rows = await session.execute(select(Member.address, Member.status).where(Member.address.in_(chunk)))
        found.update({address: status for address, status in rows.all()})
    return found


async def add_member(session: AsyncSession, row: Member) -> Member:
    session.add(row)
    await session.flush()
    return row


async def delete_members(session: AsyncSession) -> None:
    """Forget the projection of a registry that is no longer the one in use."""
    await session.execute(delete(Member))


async def members_page(
    session: AsyncSession, *, status: str | None, after: str | None, limit: int
) -> Sequence[Member]:
    statement = select(Member).order_by(Member.address)
    if status is not None:
        statement = statement.where(Member.status == status)
    if after is not None:
        statement = statement.where(Member.address > after)
    return (await session.scalars(statement.limit(limit))).all()


# --------------------------------------------------------------------------- applications


async def application(
    session: AsyncSession, application_id: int, *, for_update: bool = False
) -> MembershipApplication | None:
    statement = select(MembershipApplication).where(MembershipApplication.id == application_id)
    if for_update:
        statement = statement.with_for_update()
    return await session.scalar(statement)


async def open_application(session: AsyncSession, wallet: str) -> MembershipApplication | None:
    return await session.scalar(
        select(MembershipApplication).where(
            MembershipApplication.wallet == wallet,
            MembershipApplication.status.in_([ApplicationStatus.SUBMITTED, ApplicationStatus.UNDER_REVIEW]),
        )
    )


async def approved_application(session: AsyncSession, wallet: str) -> MembershipApplication | None:
    return await session.scalar(
        select(MembershipApplication)
        .where(
            MembershipApplication.wallet == wallet,
            MembershipApplication.status == ApplicationStatus.APPROVED,
        )
        .order_by(MembershipApplication.id.desc())
        .limit(1)
    )


async def applications_of(session: AsyncSession, wallet: str) -> Sequence[MembershipApplication]:
    return (
        await session.scalars(
            select(MembershipApplication)
            .where(MembershipApplication.wallet == wallet)
            .order_by(MembershipApplication.id.desc())
        )
    ).all()


async def applications_page(
    session: AsyncSession, *, status: str | None, after_id: int | None, limit: int
) -> Sequence[MembershipApplication]:
    statement = select(MembershipApplication).order_by(MembershipApplication.id)
    if status is not None:
        statement = statement.where(MembershipApplication.status == status)
    if after_id is not None:
        statement = statement.where(MembershipApplication.id > after_id)
    return (await session.scalars(statement.limit(limit))).all()


async def add_application(session: AsyncSession, row: MembershipApplication) -> MembershipApplication:
    session.add(row)
    await session.flush()
    return row


# --------------------------------------------------------------------------- patents


async def patent(session: AsyncSession, patent_id: str, *, for_update: bool = False) -> PatentRecord | None:
    statement = select(PatentRecord).where(PatentRecord.patent_id == patent_id)
    if for_update:
        statement = statement.with_for_update()
    return await session.scalar(statement)


async def existing_patent_ids(session: AsyncSession, patent_ids: Iterable[str]) -> set[str]:
    wanted = list(patent_ids)
    found: set[str] = set()
    for start in range(0, len(wanted), 500):  # stay under the databases' bound-parameter limits
        chunk = wanted[start : start + 500]
        found.update(
            await session.scalars(select(PatentRecord.patent_id).where(PatentRecord.patent_id.in_(chunk)))
        )
    return found


async def add_patent(session: AsyncSession, row: PatentRecord, event: PatentEventRecord) -> None:
    session.add(row)
    await session.flush()
    session.add(event)
    await session.flush()


async def add_patent_event(session: AsyncSession, event: PatentEventRecord) -> None:
    session.add(event)
    await session.flush()


async def patent_events(session: AsyncSession, patent_id: str) -> Sequence[PatentEventRecord]:
    return (
        await session.scalars(
            select(PatentEventRecord)
            .where(PatentEventRecord.patent_id == patent_id)
            .order_by(PatentEventRecord.version)
        )
    ).all()


async def patents_page(
    session: AsyncSession,
    *,
    field: str | None,
    country: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> Sequence[PatentRecord]:
    statement = select(PatentRecord).order_by(PatentRecord.patent_id)
    if field is not None:
        statement = statement.where(PatentRecord.field == field)
    if country is not None:
        statement = statement.where(PatentRecord.country == country)
    if status is not None:
        statement = statement.where(PatentRecord.status == status)
    if after is not None:
        statement = statement.where(PatentRecord.patent_id > after)
    return (await session.scalars(statement.limit(limit))).all()


async def patents_due_for_expiry(session: AsyncSession, today: date) -> Sequence[str]:
    return (
        await session.scalars(
            select(PatentRecord.patent_id)
            .where(PatentRecord.status == PatentStatus.IN_POOL, PatentRecord.expires_on <= today)
            .order_by(PatentRecord.patent_id)
        )
    ).all()


async def live_patent_counts(session: AsyncSession, column: str) -> dict[str, int]:
    """In-pool patents counted by ``field`` or ``country``."""
    key = getattr(PatentRecord, column)
    rows = await session.execute(
        select(key, func.count())
        .where(PatentRecord.status == PatentStatus.IN_POOL)
        .group_by(key)
        .order_by(key)
    )
    return {str(value): int(count) for value, count in rows}


async def live_contributor_count(session: AsyncSession) -> int:
    count = await session.scalar(
        select(func.count(func.distinct(PatentRecord.contributor))).where(
            PatentRecord.status == PatentStatus.IN_POOL, PatentRecord.contributor.is_not(None)
        )
    )
    return int(count or 0)


async def admitted_contributed_patents(session: AsyncSession) -> Sequence[PatentRecord]:
    """Contributed patents that were ever admitted: the royalty stakes."""
    return (
        await session.scalars(
            select(PatentRecord)
            .where(
                PatentRecord.source == PatentSource.CONTRIBUTED,
                PatentRecord.status.in_([PatentStatus.IN_POOL, PatentStatus.RETIRED]),
            )
            .order_by(PatentRecord.patent_id)
        )
    ).all()


async def assessments(session: AsyncSession, patent_id: str) -> Sequence[AssessmentRecord]:
    return (
        await session.scalars(
            select(AssessmentRecord)
            .where(AssessmentRecord.patent_id == patent_id)
            .order_by(AssessmentRecord.id)
        )
    ).all()


async def assessment_by(session: AsyncSession, patent_id: str, expert: str) -> AssessmentRecord | None:
    return await session.scalar(
        select(AssessmentRecord).where(
            AssessmentRecord.patent_id == patent_id, AssessmentRecord.expert == expert
        )
    )


async def add_assessment(session: AsyncSession, row: AssessmentRecord) -> AssessmentRecord:
    session.add(row)
    await session.flush()
    return row


# --------------------------------------------------------------------------- contribution mints


async def mint_for_patent(session: AsyncSession, patent_id: str) -> ContributionMint | None:
    return await session.scalar(select(ContributionMint).where(ContributionMint.patent_id == patent_id))


async def mint_by_key(session: AsyncSession, idempotency_key: str) -> ContributionMint | None:
    return await session.scalar(
        select(ContributionMint).where(ContributionMint.idempotency_key == idempotency_key)
    )


async def mint(session: AsyncSession, mint_id: int, *, for_update: bool = False) -> ContributionMint | None:
    statement = select(ContributionMint).where(ContributionMint.id == mint_id)
    if for_update:
        statement = statement.with_for_update()
    return await session.scalar(statement)


async def add_mint(session: AsyncSession, row: ContributionMint) -> ContributionMint:
    session.add(row)
    await session.flush()
    return row


async def open_mint_ids(session: AsyncSession) -> Sequence[int]:
    return (
        await session.scalars(
            select(ContributionMint.id)
            .where(ContributionMint.status.in_([MintStatus.PENDING, MintStatus.SENDING]))
            .order_by(ContributionMint.id)
        )
    ).all()


async def mints_page(
    session: AsyncSession, *, status: str | None, after_id: int | None, limit: int
) -> Sequence[ContributionMint]:
    statement = select(ContributionMint).order_by(ContributionMint.id)
    if status is not None:
        statement = statement.where(ContributionMint.status == status)
    if after_id is not None:
        statement = statement.where(ContributionMint.id > after_id)
    return (await session.scalars(statement.limit(limit))).all()


async def claim_mint(
    session: AsyncSession,
    mint_id: int,
    expected: MintStatus,
    values: dict[str, Any],
    *,
    sending_at: datetime | None = None,
) -> bool:
    """Move a mint on only if it is still in ``expected`` (and was sent at ``sending_at``, if given).

    The caller that gets True owns the step.
    """
    return await _compare_and_set(session, ContributionMint, mint_id, expected, values, sending_at)


async def _compare_and_set(
    session: AsyncSession,
    model: type[ContributionMint] | type[RoyaltyPayoutBatch],
    row_id: int,
    expected: MintStatus | BatchStatus,
    values: dict[str, Any],
    sending_at: datetime | None,
) -> bool:
    """Update row ``row_id`` of ``model`` with ``values`` only if its status is still ``expected``
    (and it was sent at ``sending_at``, if given): True when this caller moved it."""
    statement = update(model).where(model.id == row_id, model.status == expected)
    if sending_at is not None:
        statement = statement.where(model.sending_at == sending_at)
    result = await session.execute(statement.values(**values).execution_options(synchronize_session=False))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- fund deposits


async def event_recorded(
    session: AsyncSession, model: type[FundDeposit] | type[FundClaim], tx_hash: str, log_index: int
) -> bool:
    """Whether the Fund event at ``tx_hash``/``log_index`` already has its row in ``model``'s table."""
    same = (model.tx_hash == tx_hash, model.log_index == log_index)
    return await session.scalar(select(model.id).where(*same)) is not None


async def add_deposit(session: AsyncSession, row: FundDeposit) -> None:
    session.add(row)
    await session.flush()


async def undistributed_deposits(session: AsyncSession, token: str, until: datetime) -> Sequence[FundDeposit]:
    """Deposits of ``token`` made before ``until`` that no royalty run has distributed yet."""
    return (
        await session.scalars(
            select(FundDeposit)
            .where(FundDeposit.token == token, FundDeposit.run_id.is_(None), FundDeposit.block_time < until)
            .order_by(FundDeposit.block_number, FundDeposit.log_index)
        )
    ).all()


async def fund_received(session: AsyncSession, token: str) -> bool:
    """Whether any receipt of ``token`` by the Fund is indexed, distributed or not."""
    return await session.scalar(select(FundDeposit.id).where(FundDeposit.token == token).limit(1)) is not None


async def deposits_of_run(session: AsyncSession, run_id: int) -> Sequence[FundDeposit]:
    return (
        await session.scalars(
            select(FundDeposit)
            .where(FundDeposit.run_id == run_id)
            .order_by(FundDeposit.block_number, FundDeposit.log_index)
        )
    ).all()


# --------------------------------------------------------------------------- royalty runs


async def royalty_run(session: AsyncSession, run_id: int, *, for_update: bool = False) -> RoyaltyRun | None:
    statement = select(RoyaltyRun).where(RoyaltyRun.id == run_id)
    if for_update:
        statement = statement.with_for_update()
    return await session.scalar(statement)


async def royalty_run_for_period(session: AsyncSession, token: str, period_id: str) -> RoyaltyRun | None:
    return await session.scalar(
        select(RoyaltyRun).where(RoyaltyRun.token == token, RoyaltyRun.period_id == period_id)
    )


async def latest_royalty_run(session: AsyncSession, token: str) -> RoyaltyRun | None:
    return await session.scalar(
        select(RoyaltyRun).where(RoyaltyRun.token == token).order_by(RoyaltyRun.ends_on.desc()).limit(1)
    )


async def royalty_runs(session: AsyncSession) -> Sequence[RoyaltyRun]:
    return (await session.scalars(select(RoyaltyRun).order_by(RoyaltyRun.id))).all()


async def add_royalty_run(
    session: AsyncSession,
    run: RoyaltyRun,
    stakes: Iterable[RoyaltyStakeRecord],
    deposits: Iterable[FundDeposit],
) -> RoyaltyRun:
    session.add(run)
    await session.flush()
    for stake in stakes:
        stake.run_id = run.id
        session.add(stake)
    for deposit in deposits:
        deposit.run_id = run.id
    await session.flush()
    return run


async def run_stakes(session: AsyncSession, run_id: int) -> Sequence[RoyaltyStakeRecord]:
    return (
        await session.scalars(
            select(RoyaltyStakeRecord)
            .where(RoyaltyStakeRecord.run_id == run_id)
            .order_by(RoyaltyStakeRecord.patent_id)
        )
    ).all()


async def add_payout_batch(
    session: AsyncSession, batch: RoyaltyPayoutBatch, payouts: Iterable[RoyaltyPayout]
) -> RoyaltyPayoutBatch:
    session.add(batch)
    await session.flush()
    for payout in payouts:
        payout.batch_id = batch.id
        session.add(payout)
    await session.flush()
    return batch


async def payout_batches(session: AsyncSession, run_id: int) -> Sequence[RoyaltyPayoutBatch]:
    return (
        await session.scalars(
            select(RoyaltyPayoutBatch)
            .where(RoyaltyPayoutBatch.run_id == run_id)
            .order_by(RoyaltyPayoutBatch.batch_index)
        )
    ).all()


async def payouts_of_batch(session: AsyncSession, batch_id: int) -> Sequence[RoyaltyPayout]:
    return (
        await session.scalars(
            select(RoyaltyPayout).where(RoyaltyPayout.batch_id == batch_id).order_by(RoyaltyPayout.id)
        )
    ).all()


async def claim_batch(
    session: AsyncSession,
    batch_id: int,
    expected: BatchStatus,
    values: dict[str, Any],
    *,
    sending_at: datetime | None = None,
    first_from_block: int | None = None,
) -> bool:
    """Move a payout batch on only if it is still in ``expected`` (and was sent at ``sending_at``, if
    given); True when this caller moved it.

    ``first_from_block`` becomes the batch's ``from_block`` only if it has none yet: the block of its
    first claim stays, whatever claims come after.
    """
    if first_from_block is not None:
        values = {**values, "from_block": func.coalesce(RoyaltyPayoutBatch.from_block, first_from_block)}
    return await _compare_and_set(session, RoyaltyPayoutBatch, batch_id, expected, values, sending_at)


async def record_batch_paid(session: AsyncSession, batch_id: int, tx_hash: str, at: datetime) -> bool:
    """Record a payout batch as paid by ``tx_hash``, whatever its status, unless it is recorded paid
    already; True when this caller recorded it."""
    result = await session.execute(
        update(RoyaltyPayoutBatch)
        .where(RoyaltyPayoutBatch.id == batch_id, RoyaltyPayoutBatch.status != BatchStatus.PAID)
        .values(status=BatchStatus.PAID.value, tx_hash=tx_hash, paid_at=at, last_error=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


_PAYOUTS = bulk.table_of(RoyaltyPayout)


async def record_payout_outcomes(
    session: AsyncSession, batch_id: int, tx_hash: str, outcomes: Mapping[str, tuple[PayoutStatus, int, int]]
) -> None:
    """Each payout of a mined batch as its ``Fund.payout`` settled it: contributor to (``paid`` or
    ``held``, block, log index of its event)."""
    rows = [
        {
            "batch_id": batch_id,
            "contributor": contributor,
            "status": status.value,
            "tx_hash": tx_hash,
            "block_number": block_number,
            "log_index": log_index,
        }
        for contributor, (status, block_number, log_index) in outcomes.items()
    ]
    # One statement for the batch's payouts (up to the batch size), not one per contributor.
    await bulk.update_rows(session, _PAYOUTS, ("batch_id", "contributor"), rows)


# --------------------------------------------------------------------------- held payouts and claims


async def add_claim(session: AsyncSession, row: FundClaim) -> None:
    session.add(row)
    await session.flush()


async def claims_by_id(session: AsyncSession, claim_ids: Iterable[int]) -> dict[int, FundClaim]:
    wanted = set(claim_ids)
    if not wanted:
        return {}
    rows = await session.scalars(select(FundClaim).where(FundClaim.id.in_(wanted)))
    return {row.id: row for row in rows}


async def mark_held_payouts_claimed(session: AsyncSession, token: str, recipient: str) -> int:
    """Mark ``claimed`` every held royalty payout of ``token`` to ``recipient`` that a recorded claim
    took: the first ``FundClaimed`` after the payout's own event (a claim takes all that is held).
    Returns how many were marked."""
    held = (
        await session.scalars(
            select(RoyaltyPayout)
            .join(RoyaltyRun, RoyaltyRun.id == RoyaltyPayout.run_id)
            .where(
                RoyaltyRun.token == token,
                RoyaltyPayout.contributor == recipient,
                RoyaltyPayout.status == PayoutStatus.HELD.value,
            )
        )
    ).all()
    if not held:
        return 0
    claims = (
        await session.scalars(
            select(FundClaim)
            .where(FundClaim.token == token, FundClaim.recipient == recipient)
            .order_by(FundClaim.block_number, FundClaim.log_index)
        )
    ).all()
    marked = 0
    for payout in held:
        position = (payout.block_number or 0, payout.log_index or 0)
        claim = next((c for c in claims if (c.block_number, c.log_index) > position), None)
        if claim is not None:
            payout.status, payout.claim_id = PayoutStatus.CLAIMED.value, claim.id
            marked += 1
    await session.flush()
    return marked


async def forget_unused_claims(session: AsyncSession) -> None:
    """Drop the indexed claims no payout names (the projection of a chain that is gone)."""
    used = select(RoyaltyPayout.claim_id).where(RoyaltyPayout.claim_id.is_not(None))
    await session.execute(delete(FundClaim).where(FundClaim.id.not_in(used)))
