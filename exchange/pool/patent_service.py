"""Patent use cases: register, assess, decide admission, retire, and the expiry sweep.

The rules are the pure ``patents``, ``assessments`` and ``contributions``
modules; this module loads a :class:`~exchange.pool.patents.Patent` from its
row, applies one move, writes the row, the move's event and an audit entry.

Rules
-----
* A patent's id is its compact DOCDB number; registering the same number again
  with the same data returns the existing patent, with other data it is a 409.
* Members contribute patents (white paper §3.1(1), §3.2), and BPC is minted to
  members for them: a contributed patent is registered only when its
  contributor is an active member on the register as indexed (``members``);
  otherwise it is refused (422) and nothing is stored. A retry of a registration
  already stored returns it, whatever the contributor's standing since.
* Assessors assess patents that are ``under_assessment``, once each and never
  their own contribution; the same assessment again is returned, not doubled.
* The decision applies the published admission policy to the assessments. An
  admitted contributed patent stores the mint policy version in force and gets
  a pending :class:`~exchange.pool.models.ContributionMint` in the same
  transaction; the mint is sent afterwards by ``contribution_service``. A
  decision the rules would admit (lapse included) reads the register again (as
  indexed): while its contributor is suspended it is refused (409) and changes
  nothing, to be asked again once the contributor is reinstated; a contributor
  expelled meanwhile (expulsion is final), or on no register at all, neither
  indexed nor the chain's (a contribution registered before registration
  required a member), has the patent rejected, saying so. One the chain has and
  the index not yet (a lag, or an index being rebuilt) is a 409 to ask again.
  Either way no mint is owed for a patent admitted while its contributor is not
  an active member.
* Deciding, or retiring, a patent that already reached that outcome returns it
  unchanged (a retried request), anything else the state machine refuses is a 409.
* The expiry sweep retires, as expired, every in-pool patent whose expiry date
  has come; it is run at start-up, daily, by ``exchange pool expire`` and by the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from exchange.db.base import utc_now
from exchange.kit.errors import Conflict, NotFound, ValidationFailed
from exchange.kit.logging import get_logger
from exchange.pool import patents as rules
from exchange.pool import repository
from exchange.pool.assessments import (
    AdmissionDecision,
    AdmissionPolicy,
    Assessment,
    decide_admission,
    mean_score,
)
from exchange.pool.contributions import mint_for_admission
from exchange.pool.models import (
    AssessmentRecord,
    ContributionMint,
    MemberState,
    MintStatus,
    PatentEventRecord,
    PatentRecord,
)
from exchange.pool.patent_numbers import parse_patent_number
from exchange.pool.patents import FieldOfTechnology, Patent, PatentSource, PatentStatus, RetirementReason
from exchange.pool.service import PoolPolicies, patent_snapshot, record_audit

log = get_logger(__name__)

EXPIRY_ACTOR = "system:expiry-sweep"
MAX_OWNER_LENGTH = 200
MAX_FAMILY_ID_LENGTH = 64


@dataclass(frozen=True)
class PatentData:
    """A patent as submitted for registration (API or CSV import)."""

    publication_number: str
    title: str
    owner: str
    field: FieldOfTechnology
    source: PatentSource
    contributor: str | None
    expires_on: date
    family_id: str | None = None
    filing_date: date | None = None
    grant_date: date | None = None


@dataclass(frozen=True)
class Decision:
    patent: PatentRecord
    decision: AdmissionDecision | None  # None when the request found the patent already decided
    mint: ContributionMint | None
    # The mean of the assessments it was decided on: this decision's, or (decided earlier, and
    # assessments are never revised) the same mean read back.
    mean_score: Fraction | None


def to_patent(row: PatentRecord) -> Patent:
    """The pure value of a stored patent."""
    return Patent(
        number=parse_patent_number(row.patent_id),
        title=row.title,
        field=FieldOfTechnology(row.field),
        source=PatentSource(row.source),
        contributor=row.contributor,
        expires_on=row.expires_on,
        status=PatentStatus(row.status),
        score=row.score,
        in_pool_since=row.in_pool_since,
        left_pool_on=row.left_pool_on,
        retirement_reason=RetirementReason(row.retirement_reason) if row.retirement_reason else None,
        version=row.version,
    )


def _write(row: PatentRecord, patent: Patent) -> None:
    row.status = patent.status.value
    row.score = patent.score
    row.in_pool_since = patent.in_pool_since
    row.left_pool_on = patent.left_pool_on
    row.retirement_reason = patent.retirement_reason.value if patent.retirement_reason else None
    row.version = patent.version
    row.updated_at = utc_now()


def _event_row(event: rules.PatentEvent) -> PatentEventRecord:
    return PatentEventRecord(
        patent_id=event.patent_id,
        version=event.version,
        action=event.action.value,
        from_status=event.from_status.value if event.from_status else None,
        to_status=event.to_status.value,
        reason=event.reason,
        actor=event.actor,
        at=event.at,
    )


MAX_TERM_YEARS: Final = 35


def _years_after(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February, into a year without one
        return day.replace(year=day.year + years, day=28)


def registration_refusals(
    *,
    publication_number: str,
    title: str,
    owner: str,
    family_id: str | None,
    source: PatentSource | None,
    contributor: str | None,
    filing_date: date | None,
    grant_date: date | None,
    expires_on: date | None,
    at: datetime,
) -> list[rules.Refusal]:
    """Every rule a registration with these values breaks, each with its field, in the order
    :func:`prepare_patent` checks them (no I/O). A ``source`` or ``expires_on`` of ``None`` (a
    value already refused elsewhere) skips the rules that need it."""
    refusals: list[rules.Refusal] = []

    def refuse(field: str, reason: str) -> None:
        refusals.append(rules.Refusal(field, rules.InvalidPatentRecord(reason)))

    try:
        patent_id = parse_patent_number(publication_number).compact()
    except ValidationFailed as invalid:
        refusals.append(rules.Refusal("publication_number", invalid))
        patent_id = publication_number.strip()
    owner = owner.strip()
    if not owner or len(owner) > MAX_OWNER_LENGTH:
        refuse("owner", f"the owner has 1 to {MAX_OWNER_LENGTH} characters")
    family_id = (family_id or "").strip() or None
    if family_id is not None and len(family_id) > MAX_FAMILY_ID_LENGTH:
        refuse("family_id", f"a family id has at most {MAX_FAMILY_ID_LENGTH} characters")
    today = at.astimezone(UTC).date()
    # A day's grace: an office east of UTC dates its grants and filings a day ahead of it.
    tomorrow = today + timedelta(days=1)
    if filing_date and filing_date > tomorrow:
        refuse("filing_date", f"the filing date {filing_date.isoformat()} is in the future")
    if grant_date and grant_date > tomorrow:
        refuse("grant_date", f"the grant date {grant_date.isoformat()} is in the future")
    if filing_date and grant_date and grant_date < filing_date:
        refuse("grant_date", "the grant date is before the filing date")
    if filing_date and expires_on and expires_on <= filing_date:
        refuse("expires_on", "the expiry date is not after the filing date")
    # A patent lasts 20 years from filing; certificates, term adjustments and the old US rule (17
    # years from a late grant) reach past 25, none past 35: a later expiry is a mistyped date.
    latest = _years_after(filing_date or today, MAX_TERM_YEARS)
    if expires_on and expires_on > latest:
        refuse(
            "expires_on",
            f"the expiry date {expires_on.isoformat()} is more than {MAX_TERM_YEARS} years after "
            + ("the filing date" if filing_date else "today")
            + " (a patent's term is 20 years from filing, and extensions do not reach 35)",
        )
    return refusals + rules.proposal_refusals(
        patent_id,
        title=title,
        source=source,
        contributor=contributor,
        expires_on=expires_on,
        today=at.astimezone(UTC).date(),
    )


def prepare_patent(data: PatentData, *, actor: str, at: datetime) -> tuple[PatentRecord, PatentEventRecord]:
    """Validate ``data`` and build the rows of a newly proposed patent (no I/O).

    The first of :func:`registration_refusals` is raised."""
    refusals = registration_refusals(
        publication_number=data.publication_number,
        title=data.title,
        owner=data.owner,
        family_id=data.family_id,
        source=data.source,
        contributor=data.contributor,
        filing_date=data.filing_date,
        grant_date=data.grant_date,
        expires_on=data.expires_on,
        at=at,
    )
    if refusals:
        raise refusals[0].error
    number = parse_patent_number(data.publication_number)
    owner = data.owner.strip()
    family_id = (data.family_id or "").strip() or None
    patent, event = rules.propose(
        number,
        title=data.title,
        field=data.field,
        source=data.source,
        contributor=data.contributor,
        expires_on=data.expires_on,
        actor=actor,
        at=at,
    )
    row = PatentRecord(
        patent_id=patent.patent_id,
        country=number.country,
        number=number.number,
        kind=number.kind,
        title=patent.title,
        owner=owner,
        family_id=family_id,
        field=patent.field.value,
        source=patent.source.value,
        contributor=patent.contributor,
        filing_date=data.filing_date,
        grant_date=data.grant_date,
        expires_on=patent.expires_on,
        status=patent.status.value,
        version=patent.version,
        registered_by=actor,
        registered_at=at,
        updated_at=at,
    )
    return row, _event_row(event)


def contributor_refusal(contributor: str, member_status: str | None) -> str | None:
    """Why ``contributor``, whose status on the register is ``member_status`` (None: it is not on
    it), cannot contribute a patent now; None when it can (an active member)."""
    if member_status == MemberState.ACTIVE:
        return None
    standing = "is not a pool member" if member_status is None else f"is a {member_status} pool member"
    return f"the contributor {contributor} {standing}: patents are contributed by active members"


async def _member_status(session: AsyncSession, address: str) -> str | None:
    member = await repository.member(session, address)
    return member.status if member is not None else None


def _same_registration(existing: PatentRecord, new: PatentRecord) -> bool:
    fields = (
        "title",
        "owner",
        "family_id",
        "field",
        "source",
        "contributor",
        "filing_date",
        "grant_date",
        "expires_on",
    )
    return all(getattr(existing, name) == getattr(new, name) for name in fields)


async def register_patent(
    session: AsyncSession, *, data: PatentData, actor: str, at: datetime
) -> tuple[PatentRecord, bool]:
    """Register a proposed patent; the same registration again returns the stored one."""
    row, event = prepare_patent(data, actor=actor, at=at)
    existing = await repository.patent(session, row.patent_id)
    if existing is not None:
        if _same_registration(existing, row):
            return existing, False
        raise Conflict(
            f"patent {row.patent_id} is already registered with other data",
            extra={"patent_id": row.patent_id},
        )
    if row.contributor is not None:
        status = await _member_status(session, row.contributor)
        refusal = contributor_refusal(row.contributor, status)
        if refusal is not None:
            raise rules.InvalidPatentRecord(
                refusal, extra={"contributor": row.contributor, "member_status": status}
            )
    await repository.add_patent(session, row, event)
    await record_audit(
        session,
        actor=actor,
        action="patent.register",
        subject_type="patent",
        subject_id=row.patent_id,
        at=at,
        after=row,
    )
    log.info("pool.patent_registered", patent_id=row.patent_id, source=row.source)
    return row, True


async def load(session: AsyncSession, patent_id: str, *, for_update: bool = False) -> PatentRecord:
    try:
        normalised = parse_patent_number(patent_id).compact()
    except ValidationFailed:
        raise NotFound(f"no patent {patent_id!r}") from None
    row = await repository.patent(session, normalised, for_update=for_update)
    if row is None:
        raise NotFound(f"no patent {normalised}")
    return row


async def _move(
    session: AsyncSession,
    row: PatentRecord,
    moved: tuple[Patent, rules.PatentEvent],
    *,
    audit_action: str,
    actor: str,
    at: datetime,
    note: str | None,
    mint_policy_version: str | None = None,
) -> None:
    before = patent_snapshot(row)
    patent, event = moved
    _write(row, patent)
    if mint_policy_version is not None:
        row.mint_policy_version = mint_policy_version
    recorded = _event_row(event)
    if note:  # the actor's own words, after the rule's
        recorded.reason = f"{event.reason}; {note}"
    await repository.add_patent_event(session, recorded)
    await session.flush()
    await record_audit(
        session,
        actor=actor,
        action=audit_action,
        subject_type="patent",
        subject_id=row.patent_id,
        at=at,
        before=before,
        after=row,
        reason=recorded.reason,
    )
    log.info("pool.patent_moved", patent_id=row.patent_id, action=event.action.value, status=row.status)


async def start_assessment(
    session: AsyncSession, *, patent_id: str, actor: str, note: str | None, at: datetime
) -> PatentRecord:
    row = await load(session, patent_id, for_update=True)
    if row.status == PatentStatus.UNDER_ASSESSMENT:
        return row
    moved = rules.start_assessment(to_patent(row), actor=actor, at=at)
    await _move(session, row, moved, audit_action="patent.start_assessment", actor=actor, at=at, note=note)
    return row


async def assess(
    session: AsyncSession, *, patent_id: str, expert: str, score: int, core: bool, notes: str, at: datetime
) -> tuple[AssessmentRecord, bool]:
    """Record one expert's assessment; the same assessment again is returned."""
    row = await load(session, patent_id, for_update=True)
    existing = await repository.assessment_by(session, row.patent_id, expert)
    if existing is not None:
        if (existing.score, existing.core, existing.notes) == (score, core, notes):
            return existing, False
        raise Conflict(f"{expert} already assessed {row.patent_id}; an assessment is not revised")
    if row.status != PatentStatus.UNDER_ASSESSMENT:
        raise rules.IllegalTransition(
            row.patent_id, PatentStatus(row.status), "assess", "only patents under assessment are assessed"
        )
    new = Assessment(patent_id=row.patent_id, expert=expert, score=score, core=core, notes=notes)
    stored = [_assessment(a) for a in await repository.assessments(session, row.patent_id)]
    # The pure rules refuse a second assessment by one expert and one by the contributor;
    # the policy does not matter for those checks.
    decide_admission(row.patent_id, [*stored, new], AdmissionPolicy(), contributor=row.contributor)
    record = await repository.add_assessment(
        session,
        AssessmentRecord(
            patent_id=row.patent_id, expert=expert, score=score, core=core, notes=notes, assessed_at=at
        ),
    )
    await record_audit(
        session,
        actor=expert,
        action="patent.assess",
        subject_type="patent",
        subject_id=row.patent_id,
        at=at,
        after=record,
    )
    log.info("pool.patent_assessed", patent_id=row.patent_id, expert=expert, score=score, core=core)
    return record, True


def _assessment(record: AssessmentRecord) -> Assessment:
    return Assessment(
        patent_id=record.patent_id,
        expert=record.expert,
        score=record.score,
        core=record.core,
        notes=record.notes,
    )


async def decide(
    session: AsyncSession,
    *,
    patent_id: str,
    policies: PoolPolicies,
    actor: str,
    at: datetime,
    on_register: Callable[[str], Awaitable[bool]],
    close: bool = False,
) -> Decision:
    """Apply the admission policy; an admitted contribution gets its mint recorded as pending.

    ``on_register`` answers, from the chain, whether an address is on the pool's register at all:
    asked only of a contributor the indexed register does not know, before its patent is
    rejected for good (the index may lag behind the chain, or be rebuilding)."""
    row = await load(session, patent_id, for_update=True)
    if row.status in (PatentStatus.IN_POOL, PatentStatus.REJECTED, PatentStatus.RETIRED):
        scores = [assessment.score for assessment in await repository.assessments(session, row.patent_id)]
        mint = await repository.mint_for_patent(session, row.patent_id)
        return Decision(row, None, mint, mean_score(sum(scores), len(scores)))
    assessments = [_assessment(a) for a in await repository.assessments(session, row.patent_id)]
    decision = decide_admission(row.patent_id, assessments, policies.admission, contributor=row.contributor)
    needed = policies.admission.min_assessments
    if decision.assessment_count < needed and not close and at.astimezone(UTC).date() < row.expires_on:
        # A decision is final: one taken before the committee has assessed would reject the
        # patent for good, so it takes ``close`` (the registrar means it). A patent that lapsed
        # meanwhile is rejected as lapsed, as before.
        raise Conflict(
            f"patent {row.patent_id} has {decision.assessment_count} of the {needed} assessments the "
            f"admission policy needs; decide once {needed - decision.assessment_count} more "
            f"expert(s) have assessed it, or with close=true to reject it now",
            extra={"patent_id": row.patent_id, "assessments": decision.assessment_count, "needed": needed},
        )
    patent, event = rules.decide(to_patent(row), decision, actor=actor, at=at)
    if patent.status is PatentStatus.IN_POOL and row.contributor is not None:
        # Admitted by the rules (lapse included): the contributor must be an active member now.
        status = await _member_status(session, row.contributor)
        if status == MemberState.SUSPENDED:  # may be reinstated: the decision waits for it
            raise Conflict(
                f"patent {row.patent_id} is not admitted while "
                f"{contributor_refusal(row.contributor, status)}; decide again once it is reinstated",
                extra={"patent_id": row.patent_id, "contributor": row.contributor, "member_status": status},
            )
        if status is None and await on_register(row.contributor):
            raise Conflict(
                f"patent {row.patent_id} is not decided while its contributor {row.contributor}, on "
                "the pool's register, is not indexed yet; decide again once the indexer has caught up",
                extra={"patent_id": row.patent_id, "contributor": row.contributor, "member_status": None},
            )
        if status != MemberState.ACTIVE:
            # Expelled (final), or on no register at all (a contribution registered before one
            # needed a member): it can never be given the mint, so the patent is rejected, saying why.
            excluded = (
                f"its contributor {row.contributor} was expelled from the pool"
                if status == MemberState.EXPELLED
                else f"its contributor {row.contributor} is not a pool member"
            )
            patent, event = rules.decide(
                to_patent(row), decision, actor=actor, at=at, contributor_excluded=excluded
            )
    admitted = patent.status is PatentStatus.IN_POOL
    await _move(
        session,
        row,
        (patent, event),
        audit_action="patent.decide",
        actor=actor,
        at=at,
        note=None,
        # The version in force at admission decides the mint, now and on every retry.
        mint_policy_version=policies.mint.version if admitted else None,
    )
    mint = None
    if admitted:
        instruction = mint_for_admission(patent, policies.mint)
        if instruction is not None:
            mint = await repository.mint_by_key(session, instruction.idempotency_key)
            if mint is None:
                mint = await repository.add_mint(
                    session,
                    ContributionMint(
                        patent_id=instruction.patent_id,
                        idempotency_key=instruction.idempotency_key,
                        recipient=instruction.recipient,
                        amount_wei=instruction.amount_wei,
                        score=instruction.score,
                        policy_version=instruction.policy_version,
                        status=MintStatus.PENDING.value,
                        created_at=at,
                        updated_at=at,
                    ),
                )
                log.info(
                    "pool.mint_owed",
                    patent_id=row.patent_id,
                    recipient=instruction.recipient,
                    amount_wei=instruction.amount_wei,
                )
        await session.flush()
    return Decision(row, decision, mint, decision.mean_score)


async def retire(
    session: AsyncSession,
    *,
    patent_id: str,
    reason: RetirementReason,
    note: str | None,
    actor: str,
    at: datetime,
) -> PatentRecord:
    row = await load(session, patent_id, for_update=True)
    if row.status == PatentStatus.RETIRED and row.retirement_reason == reason.value:
        return row
    moved = rules.retire(to_patent(row), reason, actor=actor, at=at, note=note or "")
    await _move(session, row, moved, audit_action="patent.retire", actor=actor, at=at, note=None)
    return row


def sweep_instant(today: date, now: datetime) -> datetime:
    """The instant a sweep "as of ``today``" acts at: now, or the start of a past day."""
    if today > now.astimezone(UTC).date():
        raise ValidationFailed(f"cannot sweep as of {today.isoformat()}: that day has not come yet")
    if today == now.astimezone(UTC).date():
        return now
    return datetime.combine(today, time(0), UTC)


async def expire_due(session: AsyncSession, *, today: date, actor: str = EXPIRY_ACTOR) -> list[str]:
    """Retire, as expired, every in-pool patent whose expiry date is on or before ``today``."""
    at = sweep_instant(today, utc_now())
    retired = []
    for patent_id in await repository.patents_due_for_expiry(session, today):
        row = await load(session, patent_id, for_update=True)
        if not rules.due_for_expiry(to_patent(row), today):
            continue
        moved = rules.retire(to_patent(row), RetirementReason.EXPIRED, actor=actor, at=at)
        await _move(session, row, moved, audit_action="patent.expire", actor=actor, at=at, note=None)
        retired.append(row.patent_id)
    if retired:
        log.info("pool.patents_expired", today=today.isoformat(), count=len(retired))
    return retired
