"""Tables of pool administration: foundation roles, membership, the audit log, patents,
assessments, contribution mints, fund deposits and royalty runs.

Amounts are uint256 base units. They are stored as decimal text (``WeiAmount``):
a uint256 fits neither BIGINT nor, on SQLite, any exact numeric type, and the
service never sums them in SQL. Statuses are strings checked against their enums.

Written by:

* the request services (``*_service.py``) — roles, applications, patents,
  assessments, audit entries, royalty runs;
* the indexer (``indexer.py``) alone — ``members`` (a projection of the
  PoolRegistry's events), ``pool_fund_deposits`` (the Fund's ``FundDeposit`` and the
  Vault's ``FeesCollected`` events) and ``pool_fund_claims`` (the Fund's ``FundClaimed``);
* the mint and payout workers — the ``sending``/``minted``/``paid`` states, each
  committed before and after its transaction so that a restart can reconcile.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from exchange.db.base import Base, utc_now
from exchange.db.types import WeiAmount
from exchange.pool.patents import FieldOfTechnology, PatentSource, PatentStatus

ADDRESS = String(42)
TX_HASH = String(66)
ACTOR_LENGTH = 64
ACTOR = String(ACTOR_LENGTH)  # an EIP-55 address, or "settings", "system:<job>", "cli:<name>"


class FoundationRole(StrEnum):
    COUNCIL = "council"  # decides membership, expels, runs royalty distributions, grants roles
    REGISTRAR = "registrar"  # reviews applications, keeps the register, runs the patent lifecycle
    ASSESSOR = "assessor"  # expert of the committee: assesses patents


class ApplicationStatus(StrEnum):
    SUBMITTED = "submitted"
    UNDER_REVIEW = "under_review"
    APPROVED = "approved"
    REJECTED = "rejected"


class EnterpriseSize(StrEnum):
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


class MemberTier(StrEnum):
    """PoolRegistry.Tier by name."""

    NON_PROFIT = "non_profit"
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


class MemberState(StrEnum):
    """PoolRegistry.Status by name (``None`` never appears: such an account has no row)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    EXPELLED = "expelled"


class MintStatus(StrEnum):
    PENDING = "pending"  # owed, not yet sent
    SENDING = "sending"  # committed as about to be sent: a restart must look on chain first
    MINTED = "minted"
    FAILED = "failed"  # the contract refused it; needs an operator


class RunStatus(StrEnum):
    COMPUTED = "computed"
    PAYING = "paying"
    PAID = "paid"


class BatchStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    PAID = "paid"  # its Fund.payout was mined: each of its payouts is paid or held


class PayoutStatus(StrEnum):
    PENDING = "pending"  # its batch's Fund.payout is not mined yet
    PAID = "paid"  # delivered (FundPayout)
    HELD = "held"  # the token refused it: the Fund holds it for the contributor (FundPayoutHeld)
    CLAIMED = "claimed"  # held, then claimed by the contributor (FundClaimed)


def _one_of(column: str, values: type[StrEnum], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{value.value}'" for value in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


class FoundationRoleGrant(Base):
    """One role held by one address; a revoked grant keeps its row (``revoked_at``)."""

    __tablename__ = "foundation_roles"
    __table_args__ = (
        _one_of("role", FoundationRole, "role_known"),
        # At most one live grant per address and role.
        Index(
            None,
            "address",
            "role",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(ADDRESS)
    role: Mapped[str] = mapped_column(String(16))
    granted_by: Mapped[str] = mapped_column(ACTOR)
    granted_at: Mapped[datetime] = mapped_column(default=utc_now)
    revoked_by: Mapped[str | None] = mapped_column(ACTOR, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class MembershipApplication(Base):
    """An organisation's request to join the pool, and what the foundation decided."""

    __tablename__ = "membership_applications"
    __table_args__ = (
        _one_of("status", ApplicationStatus, "status_known"),
        _one_of("enterprise_size", EnterpriseSize, "enterprise_size_known"),
        CheckConstraint(
            "approved_tier IS NULL OR approved_tier IN ('non_profit', 'small', 'medium', 'large')",
            name="approved_tier_known",
        ),
        # One open application per wallet.
        Index(
            None,
            "wallet",
            unique=True,
            sqlite_where=text("status IN ('submitted', 'under_review')"),
            postgresql_where=text("status IN ('submitted', 'under_review')"),
        ),
        Index(None, "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    wallet: Mapped[str] = mapped_column(ADDRESS)
    organisation: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2))
    enterprise_size: Mapped[str] = mapped_column(String(16))
    size_evidence: Mapped[str] = mapped_column(Text)
    non_profit: Mapped[bool]
    contact_name: Mapped[str] = mapped_column(String(200))
    contact_email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16))
    submitted_at: Mapped[datetime] = mapped_column(default=utc_now)
    reviewed_by: Mapped[str | None] = mapped_column(ACTOR, default=None)
    reviewed_at: Mapped[datetime | None] = mapped_column(default=None)
    review_note: Mapped[str | None] = mapped_column(Text, default=None)
    decided_by: Mapped[str | None] = mapped_column(ACTOR, default=None)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)
    decision_note: Mapped[str | None] = mapped_column(Text, default=None)
    approved_tier: Mapped[str | None] = mapped_column(String(16), default=None)
    admit_tx_hash: Mapped[str | None] = mapped_column(TX_HASH, default=None)


class Member(Base):
    """The PoolRegistry's record of a member, as its events say. Only the indexer writes it."""

    __tablename__ = "members"
    __table_args__ = (
        _one_of("tier", MemberTier, "tier_known"),
        _one_of("status", MemberState, "status_known"),
        Index(None, "status"),
    )

    address: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    tier: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    admitted_at: Mapped[datetime]  # the admission block's timestamp
    application_id: Mapped[int | None] = mapped_column(ForeignKey("membership_applications.id"))
    last_block: Mapped[int] = mapped_column(BigInteger)  # position of the last event applied
    last_log_index: Mapped[int]
    last_tx_hash: Mapped[str] = mapped_column(TX_HASH)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class IndexerCursor(Base):
    """The last block an indexer has fully applied, per contract; restarts resume after it."""

    __tablename__ = "pool_indexer_cursors"
    __table_args__ = (CheckConstraint("block >= 0", name="block_not_negative"),)

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    contract: Mapped[str] = mapped_column(ADDRESS)
    # Hash of the deployment's first block: a chain redeployed at the same addresses (the embedded
    # EVM at every start) has another, and the projections built from the old one are dropped.
    anchor_block_hash: Mapped[str] = mapped_column(String(66))
    block: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class AuditEntry(Base):
    """One admin action: who did what to which subject, when, before and after, and on which txs.

    Append-only: the repository has no update or delete for it, and the migration
    installs triggers that make the database refuse UPDATE and DELETE.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "subject_type", "subject_id"), Index(None, "action"))

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utc_now)
    actor: Mapped[str] = mapped_column(ACTOR)
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(128))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    tx_hashes: Mapped[list[str]] = mapped_column(JSON, default=list)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    # The request's X-Request-ID, which may have up to 128 characters (exchange.api.request_context).
    request_id: Mapped[str | None] = mapped_column(String(128), default=None)


class PatentRecord(Base):
    """A patent and where it stands; ``version`` counts its lifecycle moves."""

    __tablename__ = "pool_patents"
    __table_args__ = (
        _one_of("field", FieldOfTechnology, "field_known"),
        _one_of("source", PatentSource, "source_known"),
        _one_of("status", PatentStatus, "status_known"),
        CheckConstraint(
            "retirement_reason IS NULL OR retirement_reason IN ('expired', 'non_core', 'transferred_out')",
            name="retirement_reason_known",
        ),
        CheckConstraint("score IS NULL OR (score >= 0 AND score <= 100)", name="score_range"),
        CheckConstraint("version >= 1", name="version_positive"),
        Index(None, "status", "field"),
        Index(None, "status", "country"),
        Index(None, "status", "expires_on"),
        Index(None, "contributor"),
    )

    patent_id: Mapped[str] = mapped_column(String(32), primary_key=True)  # compact DOCDB form
    country: Mapped[str] = mapped_column(String(2))
    number: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(2))
    title: Mapped[str] = mapped_column(String(500))
    owner: Mapped[str] = mapped_column(String(200))
    family_id: Mapped[str | None] = mapped_column(String(64), default=None)
    field: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    contributor: Mapped[str | None] = mapped_column(ADDRESS, default=None)
    filing_date: Mapped[date | None] = mapped_column(Date, default=None)
    grant_date: Mapped[date | None] = mapped_column(Date, default=None)
    expires_on: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20))
    score: Mapped[int | None] = mapped_column(default=None)
    in_pool_since: Mapped[date | None] = mapped_column(Date, default=None)
    left_pool_on: Mapped[date | None] = mapped_column(Date, default=None)
    retirement_reason: Mapped[str | None] = mapped_column(String(20), default=None)
    version: Mapped[int]
    mint_policy_version: Mapped[str | None] = mapped_column(String(64), default=None)
    registered_by: Mapped[str] = mapped_column(ACTOR)
    registered_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class PatentEventRecord(Base):
    """One lifecycle move of a patent, with its reason and actor."""

    __tablename__ = "pool_patent_events"
    __table_args__ = (UniqueConstraint("patent_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patent_id: Mapped[str] = mapped_column(ForeignKey("pool_patents.patent_id"))
    version: Mapped[int]
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(ACTOR)
    at: Mapped[datetime]


class AssessmentRecord(Base):
    """One expert's assessment of one patent."""

    __tablename__ = "pool_assessments"
    __table_args__ = (
        UniqueConstraint("patent_id", "expert"),
        CheckConstraint("score >= 0 AND score <= 100", name="score_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patent_id: Mapped[str] = mapped_column(ForeignKey("pool_patents.patent_id"))
    expert: Mapped[str] = mapped_column(ADDRESS)
    score: Mapped[int]
    core: Mapped[bool]
    notes: Mapped[str] = mapped_column(Text, default="")
    assessed_at: Mapped[datetime] = mapped_column(default=utc_now)


class ContributionMint(Base):
    """BPC owed to a contributor for one admitted patent; minted once (``idempotency_key``)."""

    __tablename__ = "pool_contribution_mints"
    __table_args__ = (_one_of("status", MintStatus, "status_known"), Index(None, "status"))

    id: Mapped[int] = mapped_column(primary_key=True)
    patent_id: Mapped[str] = mapped_column(ForeignKey("pool_patents.patent_id"), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(66), unique=True)
    recipient: Mapped[str] = mapped_column(ADDRESS)
    amount_wei: Mapped[int] = mapped_column(WeiAmount)
    score: Mapped[int]
    policy_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    from_block: Mapped[int | None] = mapped_column(BigInteger, default=None)  # head when sending began
    sending_at: Mapped[datetime | None] = mapped_column(default=None)
    tx_hash: Mapped[str | None] = mapped_column(TX_HASH, unique=True, default=None)
    minted_block: Mapped[int | None] = mapped_column(BigInteger, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class FundDeposit(Base):
    """Something the Fund received; ``run_id`` is the royalty run that distributed it.

    ``event`` says how it was seen: ``FundDeposit`` (``Fund.deposit``: licence fees
    from the LicenseGate, anyone's deposits) or ``FeesCollected`` (the Vault's
    trading fees, which reach the Fund by a plain transfer; ``sender`` is the Vault).
    ``amount_wei`` is what reached the Fund, less than was sent when the token takes
    a fee on transfer.
    """

    __tablename__ = "pool_fund_deposits"
    __table_args__ = (
        UniqueConstraint("tx_hash", "log_index"),
        Index(None, "token", "run_id"),
        CheckConstraint("event IN ('FundDeposit', 'FeesCollected')", name="event_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event: Mapped[str] = mapped_column(String(32), server_default="FundDeposit")
    token: Mapped[str] = mapped_column(ADDRESS)
    sender: Mapped[str] = mapped_column(ADDRESS)
    amount_wei: Mapped[int] = mapped_column(WeiAmount)
    source: Mapped[str] = mapped_column(String(66))
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_time: Mapped[datetime]
    tx_hash: Mapped[str] = mapped_column(TX_HASH)
    log_index: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("pool_royalty_runs.id"), default=None)


class RoyaltyRun(Base):
    """One period's distribution of one token: what was received, carried, paid."""

    __tablename__ = "pool_royalty_runs"
    __table_args__ = (
        UniqueConstraint("token", "period_id"),
        _one_of("status", RunStatus, "status_known"),
        CheckConstraint("starts_on <= ends_on", name="period_ordered"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(ADDRESS)
    period_id: Mapped[str] = mapped_column(String(64))
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date] = mapped_column(Date)
    received_wei: Mapped[int] = mapped_column(WeiAmount)
    carry_in_wei: Mapped[int] = mapped_column(WeiAmount)
    paid_wei: Mapped[int] = mapped_column(WeiAmount)
    carry_out_wei: Mapped[int] = mapped_column(WeiAmount)
    total_weight: Mapped[int] = mapped_column(BigInteger)
    remainder_rule: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    payout_tag: Mapped[str] = mapped_column(String(66))
    created_by: Mapped[str] = mapped_column(ACTOR)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    paid_at: Mapped[datetime | None] = mapped_column(default=None)


class RoyaltyStakeRecord(Base):
    """A patent's stake as it stood when its run was computed; statements are recomputed from these."""

    __tablename__ = "pool_royalty_stakes"
    __table_args__ = (UniqueConstraint("run_id", "patent_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pool_royalty_runs.id"))
    patent_id: Mapped[str] = mapped_column(String(32))
    contributor: Mapped[str] = mapped_column(ADDRESS)
    weight: Mapped[int]
    in_pool_from: Mapped[date] = mapped_column(Date)
    in_pool_until: Mapped[date | None] = mapped_column(Date)


class RoyaltyPayoutBatch(Base):
    """One ``Fund.payout`` transaction of a run."""

    __tablename__ = "pool_royalty_payout_batches"
    __table_args__ = (
        UniqueConstraint("run_id", "batch_index"),
        _one_of("status", BatchStatus, "status_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pool_royalty_runs.id"))
    batch_index: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    from_block: Mapped[int | None] = mapped_column(BigInteger, default=None)
    sending_at: Mapped[datetime | None] = mapped_column(default=None)
    tx_hash: Mapped[str | None] = mapped_column(TX_HASH, default=None)
    paid_at: Mapped[datetime | None] = mapped_column(default=None)
    # Why the Fund refused the batch's last send (its revert); cleared once the batch is paid.
    last_error: Mapped[str | None] = mapped_column(Text, default=None)


class FundClaim(Base):
    """A ``FundClaimed`` event: ``recipient`` took all the Fund held for it of ``token``, sent to ``paid_to``.

    Written by the pool indexer; a held royalty payout names the claim that took it.
    """

    __tablename__ = "pool_fund_claims"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index"), Index(None, "token", "recipient"))

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(ADDRESS)
    recipient: Mapped[str] = mapped_column(ADDRESS)
    paid_to: Mapped[str] = mapped_column(ADDRESS)
    amount_wei: Mapped[int] = mapped_column(WeiAmount)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_time: Mapped[datetime]
    tx_hash: Mapped[str] = mapped_column(TX_HASH)
    log_index: Mapped[int] = mapped_column(Integer)


class RoyaltyPayout(Base):
    """One contributor's payout in a run, and how it stands on chain.

    ``pending`` until its batch's ``Fund.payout`` is mined, then ``paid`` or ``held``
    (the token refused it and the Fund holds it for the contributor), with the
    transaction and the position of its event (``FundPayout`` or ``FundPayoutHeld``).
    A held payout becomes ``claimed`` by the first ``FundClaimed`` of its token and
    contributor after it (a claim takes all that is held), which ``claim_id`` names.
    """

    __tablename__ = "pool_royalty_payouts"
    __table_args__ = (
        UniqueConstraint("run_id", "contributor"),
        _one_of("status", PayoutStatus, "status_known"),
        Index(None, "contributor", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("pool_royalty_runs.id"))
    batch_id: Mapped[int] = mapped_column(ForeignKey("pool_royalty_payout_batches.id"))
    contributor: Mapped[str] = mapped_column(ADDRESS)
    amount_wei: Mapped[int] = mapped_column(WeiAmount)
    weight: Mapped[int]
    status: Mapped[str] = mapped_column(
        String(16), default=PayoutStatus.PENDING.value, server_default=PayoutStatus.PENDING.value
    )
    tx_hash: Mapped[str | None] = mapped_column(TX_HASH, default=None)
    block_number: Mapped[int | None] = mapped_column(BigInteger, default=None)
    log_index: Mapped[int | None] = mapped_column(Integer, default=None)
    claim_id: Mapped[int | None] = mapped_column(ForeignKey("pool_fund_claims.id"), default=None)
