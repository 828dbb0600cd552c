"""The life of a patent in the pool, as a pure state machine (white paper §3.1, §4.1).

Patents come from three sources (§3.1(1)): members contribute them, the
foundation buys them, or the foundation files them itself. Each one is proposed,
assessed by experts, and then admitted to the pool or rejected; an admitted
patent stays in the pool until it is retired, because it expired, because the
experts found it non-core, or because it was transferred out (§3.1: "regular
patent transfer, mergers and acquisitions out of the pool")::

    proposed ──start_assessment──▶ under_assessment ──decide──▶ in_pool ──retire──▶ retired
                                                     └─decide──▶ rejected

Every move is a function ``(patent, ..., actor, at) -> (patent, PatentEvent)``:
it returns the next value and the event to record, and changes nothing else.
A move the current status does not allow raises :class:`IllegalTransition`
(a 409: it clashes with the patent's state); bad input raises
:class:`InvalidPatentRecord` (a 422).

Rules and invariants
--------------------
* ``retired`` and ``rejected`` are final. ``version`` counts moves, so a store can
  refuse a write based on a stale read.
* ``expires_on`` is the day the patent lapses: from that day on it is no longer in
  force. :func:`due_for_expiry` is true for an in-pool patent on or after that
  day. A patent already lapsed on the day it is proposed is refused.
* No clock: every move takes ``at``, a timezone-aware instant; its UTC date is
  "today" for the expiry rules.
* A contributed patent names its contributor (an EIP-55 address, who receives
  BPC and royalties); a purchased or foundation-filed patent has none. Members
  contribute patents (§3.1(1)): the service registers a contribution only from
  an active member and admits it only while its contributor still is one.
* :func:`decide` applies an :class:`~exchange.pool.assessments.AdmissionDecision`
  for this patent. An admitted patent records the decision's ``score`` (used by
  the mint and royalty rules) and ``in_pool_since``. A decision to admit a patent
  that lapsed during its assessment, or whose contributor can never be given its
  mint (expelled from the pool meanwhile, expulsion being final, or on no
  register at all), rejects it instead, saying so.
* Retiring records ``left_pool_on``: the retirement day, or for expiry the day
  the patent lapsed (an expiry sweep that runs late does not extend its life).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Final

from exchange.kit.addresses import checked_address
from exchange.kit.errors import Conflict, ValidationFailed
from exchange.pool.assessments import AdmissionDecision
from exchange.pool.patent_numbers import PatentNumber

MAX_TITLE_LENGTH: Final = 500
MAX_NOTE_LENGTH: Final = 2000


class FieldOfTechnology(StrEnum):
    """The collections of §4.1: blockchain patents and the related fields."""

    BLOCKCHAIN = "blockchain"  # Blockchain Patent Collection (BPC)
    AI = "ai"  # AI Patent Collection (APC)
    BIG_DATA = "big_data"  # Big Data Patent Collection (DPC)
    QUANTUM = "quantum"  # quantum computing
    GENE = "gene"  # Gene Patent Collection (GPC)


class PatentSource(StrEnum):
    """Where a patent came from (§3.1(1))."""

    CONTRIBUTED = "contributed"  # by an active member, who receives BPC and royalties
    PURCHASED = "purchased"  # bought by the foundation
    FILED = "filed"  # applied for by the foundation itself


class PatentStatus(StrEnum):
    PROPOSED = "proposed"
    UNDER_ASSESSMENT = "under_assessment"
    IN_POOL = "in_pool"
    RETIRED = "retired"
    REJECTED = "rejected"


class RetirementReason(StrEnum):
    EXPIRED = "expired"
    NON_CORE = "non_core"
    TRANSFERRED_OUT = "transferred_out"


class PatentAction(StrEnum):
    PROPOSED = "proposed"
    ASSESSMENT_STARTED = "assessment_started"
    ADMITTED = "admitted"
    REJECTED = "rejected"
    RETIRED = "retired"


TRANSITIONS: Final[dict[PatentStatus, frozenset[PatentStatus]]] = {
    PatentStatus.PROPOSED: frozenset({PatentStatus.UNDER_ASSESSMENT}),
    PatentStatus.UNDER_ASSESSMENT: frozenset({PatentStatus.IN_POOL, PatentStatus.REJECTED}),
    PatentStatus.IN_POOL: frozenset({PatentStatus.RETIRED}),
    PatentStatus.RETIRED: frozenset(),
    PatentStatus.REJECTED: frozenset(),
}


class InvalidPatentRecord(ValidationFailed):
    """A patent's data or a move's arguments break a rule of this module."""

    type_slug = "invalid-patent-record"
    title = "Invalid patent record"


class IllegalTransition(Conflict):
    """The patent's current status does not allow the requested move."""

    type_slug = "illegal-patent-transition"
    title = "Illegal patent transition"

    def __init__(self, patent_id: str, status: PatentStatus, action: str, detail: str) -> None:
        super().__init__(
            f"patent {patent_id} is {status.value}: {detail}",
            extra={"patent_id": patent_id, "patent_status": status.value, "action": action},
        )
        self.patent_id = patent_id
        self.patent_status = status
        self.action = action


@dataclass(frozen=True, slots=True)
class Patent:
    """One patent and where it stands. Create it with :func:`propose`."""

    number: PatentNumber
    title: str
    field: FieldOfTechnology
    source: PatentSource
    contributor: str | None
    expires_on: date
    status: PatentStatus = PatentStatus.PROPOSED
    score: int | None = None  # the admission score, set on admission
    in_pool_since: date | None = None
    left_pool_on: date | None = None
    retirement_reason: RetirementReason | None = None
    version: int = 0

    def __post_init__(self) -> None:
        # A value read back from a store must still tell a consistent story.
        if (self.source is PatentSource.CONTRIBUTED) != (self.contributor is not None):
            raise InvalidPatentRecord("exactly the contributed patents name a contributor")
        admitted = self.status in (PatentStatus.IN_POOL, PatentStatus.RETIRED)
        if {admitted} != {self.score is not None, self.in_pool_since is not None}:
            raise InvalidPatentRecord("exactly the admitted patents carry a score and in_pool_since")
        if self.score is not None and not 0 <= self.score <= 100:
            raise InvalidPatentRecord(f"an admission score is 0 to 100, not {self.score}")
        retired = self.status is PatentStatus.RETIRED
        if {retired} != {self.left_pool_on is not None, self.retirement_reason is not None}:
            raise InvalidPatentRecord("exactly the retired patents carry left_pool_on and retirement_reason")
        if self.version < 1:
            raise InvalidPatentRecord("a patent's version starts at 1")

    @property
    def patent_id(self) -> str:
        """The compact DOCDB publication number, e.g. ``US10123456B2``."""
        return self.number.compact()


@dataclass(frozen=True, slots=True)
class PatentEvent:
    """One recorded move: what happened to which patent, why, by whom, when."""

    patent_id: str
    action: PatentAction
    from_status: PatentStatus | None
    to_status: PatentStatus
    reason: str
    actor: str
    at: datetime
    version: int


def contributor_address(value: str) -> str:
    """``value`` as an EIP-55 checksummed address; refuse anything else (``kit.addresses``)."""
    try:
        return checked_address(value)
    except ValueError as error:
        raise InvalidPatentRecord(str(error)) from None


def due_for_expiry(patent: Patent, today: date) -> bool:
    """True when ``patent`` is in the pool but no longer in force on ``today``."""
    return patent.status is PatentStatus.IN_POOL and today >= patent.expires_on


@dataclass(frozen=True, slots=True)
class Refusal:
    """One rule a proposed patent breaks, and the field it is about."""

    field: str
    error: ValidationFailed


def proposal_refusals(
    patent_id: str,
    *,
    title: str,
    source: PatentSource | None,
    contributor: str | None,
    expires_on: date | None,
    today: date,
) -> list[Refusal]:
    """Every rule of :func:`propose` that these values break, in the order it checks them.

    A ``source`` or ``expires_on`` of ``None`` (a value already refused elsewhere) skips the rules
    that need it.
    """
    refusals: list[Refusal] = []

    def refuse(field: str, reason: str) -> None:
        refusals.append(Refusal(field, InvalidPatentRecord(reason)))

    title = title.strip()
    if not title or len(title) > MAX_TITLE_LENGTH:
        refuse("title", f"a patent title has 1 to {MAX_TITLE_LENGTH} characters")
    if source is PatentSource.CONTRIBUTED:
        if contributor is None:
            refuse("contributor", "a contributed patent names its contributor")
        else:
            try:
                address = contributor_address(contributor)
            except InvalidPatentRecord as invalid:
                refusals.append(Refusal("contributor", invalid))
            else:
                if int(address, 16) == 0:  # no one holds it: BPC mints and Fund payouts to it revert
                    refuse("contributor", "the contributor is the zero address, which can receive nothing")
    elif source is not None and contributor is not None:
        refuse("contributor", f"a {source.value} patent has no contributor; the foundation holds it")
    if expires_on is not None and today >= expires_on:
        refuse("expires_on", f"patent {patent_id} lapsed on {expires_on.isoformat()}; it cannot be proposed")
    return refusals


def propose(
    number: PatentNumber,
    *,
    title: str,
    field: FieldOfTechnology,
    source: PatentSource,
    contributor: str | None,
    expires_on: date,
    actor: str,
    at: datetime,
) -> tuple[Patent, PatentEvent]:
    """A new patent in ``proposed``; ``contributor`` is required exactly for contributed patents.

    The first of :func:`proposal_refusals` is raised.
    """
    today = _today(at)
    refusals = proposal_refusals(
        number.compact(),
        title=title,
        source=source,
        contributor=contributor,
        expires_on=expires_on,
        today=today,
    )
    if refusals:
        raise refusals[0].error
    title = title.strip()
    if contributor is not None:
        contributor = contributor_address(contributor)
    patent = Patent(
        number=number,
        title=title,
        field=field,
        source=source,
        contributor=contributor,
        expires_on=expires_on,
        version=1,
    )
    event = PatentEvent(
        patent_id=patent.patent_id,
        action=PatentAction.PROPOSED,
        from_status=None,
        to_status=PatentStatus.PROPOSED,
        reason=f"{source.value} patent proposed",
        actor=_actor(actor),
        at=at,
        version=1,
    )
    return patent, event


def start_assessment(patent: Patent, *, actor: str, at: datetime) -> tuple[Patent, PatentEvent]:
    """``proposed`` → ``under_assessment``: the experts may now assess it."""
    _today(at)
    _require(patent, PatentStatus.UNDER_ASSESSMENT, "start_assessment")
    return _move(
        patent,
        PatentAction.ASSESSMENT_STARTED,
        PatentStatus.UNDER_ASSESSMENT,
        reason="sent to the expert committee",
        actor=actor,
        at=at,
    )


def decide(
    patent: Patent,
    decision: AdmissionDecision,
    *,
    actor: str,
    at: datetime,
    contributor_excluded: str | None = None,
) -> tuple[Patent, PatentEvent]:
    """``under_assessment`` → ``in_pool`` or ``rejected``, as ``decision`` says; rejected when it
    lapsed meanwhile, or when ``contributor_excluded`` says why its contributor can never be
    given its mint (expelled, or not on the register)."""
    today = _today(at)
    _require(patent, PatentStatus.IN_POOL, "decide")
    if decision.patent_id != patent.patent_id:
        raise InvalidPatentRecord(f"the decision is about {decision.patent_id}, not {patent.patent_id}")
    reasons = "; ".join(decision.reasons)
    if not decision.admitted:
        return _move(patent, PatentAction.REJECTED, PatentStatus.REJECTED, reason=reasons, actor=actor, at=at)
    if today >= patent.expires_on:
        return _move(
            patent,
            PatentAction.REJECTED,
            PatentStatus.REJECTED,
            reason=f"lapsed on {patent.expires_on.isoformat()} during its assessment; {reasons}",
            actor=actor,
            at=at,
        )
    if contributor_excluded is not None:
        return _move(
            patent,
            PatentAction.REJECTED,
            PatentStatus.REJECTED,
            reason=f"{contributor_excluded}; {reasons}",
            actor=actor,
            at=at,
        )
    return _move(
        patent,
        PatentAction.ADMITTED,
        PatentStatus.IN_POOL,
        reason=reasons,
        actor=actor,
        at=at,
        score=decision.score,
        in_pool_since=today,
    )


def retire(
    patent: Patent, reason: RetirementReason, *, actor: str, at: datetime, note: str = ""
) -> tuple[Patent, PatentEvent]:
    """``in_pool`` → ``retired``. Retiring as expired needs the patent to have lapsed."""
    today = _today(at)
    _require(patent, PatentStatus.RETIRED, "retire")
    note = note.strip()
    if len(note) > MAX_NOTE_LENGTH:
        raise InvalidPatentRecord(f"a retirement note has at most {MAX_NOTE_LENGTH} characters")
    left_pool_on = today
    if reason is RetirementReason.EXPIRED:
        if today < patent.expires_on:
            raise IllegalTransition(
                patent.patent_id,
                patent.status,
                "retire",
                f"it is in force until {patent.expires_on.isoformat()} and cannot be retired as expired",
            )
        left_pool_on = patent.expires_on
    return _move(
        patent,
        PatentAction.RETIRED,
        PatentStatus.RETIRED,
        reason=f"{reason.value}: {note}" if note else reason.value,
        actor=actor,
        at=at,
        left_pool_on=left_pool_on,
        retirement_reason=reason,
    )


def _today(at: datetime) -> date:
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidPatentRecord("'at' must be a timezone-aware instant")
    return at.astimezone(UTC).date()


def _actor(actor: str) -> str:
    actor = actor.strip()
    if not actor:
        raise InvalidPatentRecord("every move names its actor")
    return actor


def _require(patent: Patent, to_status: PatentStatus, action: str) -> None:
    """Refuse unless ``TRANSITIONS`` allows ``patent.status`` → ``to_status``."""
    if to_status in TRANSITIONS[patent.status]:
        return
    sources = " or ".join(status.value for status, targets in TRANSITIONS.items() if to_status in targets)
    raise IllegalTransition(patent.patent_id, patent.status, action, f"'{action}' needs {sources}")


def _move(
    patent: Patent,
    action: PatentAction,
    to_status: PatentStatus,
    *,
    reason: str,
    actor: str,
    at: datetime,
    score: int | None = None,
    in_pool_since: date | None = None,
    left_pool_on: date | None = None,
    retirement_reason: RetirementReason | None = None,
) -> tuple[Patent, PatentEvent]:
    _require(patent, to_status, action.value)
    actor = _actor(actor)
    moved = replace(
        patent,
        status=to_status,
        score=score if score is not None else patent.score,
        in_pool_since=in_pool_since or patent.in_pool_since,
        left_pool_on=left_pool_on or patent.left_pool_on,
        retirement_reason=retirement_reason or patent.retirement_reason,
        version=patent.version + 1,
    )
    event = PatentEvent(
        patent_id=patent.patent_id,
        action=action,
        from_status=patent.status,
        to_status=to_status,
        reason=reason,
        actor=actor,
        at=at,
        version=moved.version,
    )
    return moved, event
