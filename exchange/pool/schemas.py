"""API shapes of pool administration.

Amounts are decimal strings (``*_wei``): a uint256 does not fit a JSON number
that JavaScript reads exactly. Lists are pages with an opaque ``next_cursor``;
pass it back as ``cursor`` for the next page (``null`` on the last page).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import date, datetime
from typing import Annotated, Any, Generic, TypeVar

from eth_utils.address import to_checksum_address
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
)

from exchange.api.dependencies import ROW_ID_MAX
from exchange.kit.addresses import Address, checked_address
from exchange.kit.errors import ValidationFailed
from exchange.kit.text import FilledText, Note, Text, storable_text
from exchange.pool.models import (
    ApplicationStatus,
    AuditEntry,
    ContributionMint,
    EnterpriseSize,
    FoundationRole,
    FoundationRoleGrant,
    FundClaim,
    Member,
    MembershipApplication,
    MemberState,
    MemberTier,
    MintStatus,
    PatentEventRecord,
    PatentRecord,
    RoyaltyPayout,
    RoyaltyPayoutBatch,
    RoyaltyRun,
)
from exchange.pool.patent_numbers import parse_patent_number
from exchange.pool.patents import FieldOfTechnology, PatentSource, PatentStatus, RetirementReason
from exchange.pool.royalties import batch_payout_tag

Item = TypeVar("Item")


def encode_cursor(value: str | int) -> str:
    """An opaque page cursor for the last key of a page."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: type[str] | type[int]) -> Any:
    """The key a cursor stands for; a cursor not made by :func:`encode_cursor` is a 422."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, RecursionError):
        raise ValidationFailed("the cursor is not one this API issued") from None
    # Keys are INTEGER ids, or addresses and patent ids: ASCII without NUL, which PostgreSQL
    # refuses in the query the key is put into.
    if isinstance(value, int):
        in_range = 1 <= value <= ROW_ID_MAX
    else:
        in_range = isinstance(value, str) and value.isascii() and "\0" not in value
    if type(value) is not kind or not in_range:
        raise ValidationFailed("the cursor is not one this API issued")
    return value


# A patent family's id, when a record gives one (its limit the string's own: exchange.kit.text.Note).
FamilyId = Annotated[str, StringConstraints(max_length=64), AfterValidator(storable_text)]


class _RequestBody(BaseModel):
    """A request body: a field it does not name is refused (422 ``extra_forbidden``), as the
    trading and licence bodies are, rather than dropped without a word."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


def checksummed(value: str) -> str:
    """``value`` as an EIP-55 address; anything else is a 422 (``kit.addresses``: mixed case
    must be the checksum)."""
    try:
        return checked_address(value)
    except ValueError as error:
        raise ValidationFailed(str(error)) from None


# --------------------------------------------------------------------------- roles and audit


class RoleGrantIn(_RequestBody):
    address: Address
    role: FoundationRole
    reason: Note | None = None

    @field_validator("address")
    @classmethod
    def _checksum(cls, value: str) -> str:
        return str(to_checksum_address(value))


class RoleGrantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    address: str
    role: FoundationRole
    granted_by: str
    granted_at: datetime
    revoked_by: str | None
    revoked_at: datetime | None


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    occurred_at: datetime
    actor: str = Field(description="The signed-in address, or settings / system:<job> / cli:<name>.")
    action: str
    subject_type: str
    subject_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    tx_hashes: list[str]
    reason: str | None
    request_id: str | None

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        return cls.model_validate(entry)


# --------------------------------------------------------------------------- membership


class ApplicationIn(_RequestBody):
    """An application to join, for the signed-in wallet."""

    organisation: FilledText = Field(min_length=1, max_length=200)
    country: str = Field(
        pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 code of the organisation's seat."
    )
    enterprise_size: EnterpriseSize
    size_evidence: FilledText = Field(
        min_length=1,
        max_length=4000,
        description="What shows the size: headcount, turnover, registry extract.",
    )
    non_profit: StrictBool
    contact_name: FilledText = Field(min_length=1, max_length=200)
    contact_email: Text = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320)


class ApplicationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    wallet: str
    organisation: str
    country: str
    enterprise_size: EnterpriseSize
    size_evidence: str
    non_profit: bool
    contact_name: str
    contact_email: str
    status: ApplicationStatus
    submitted_at: datetime
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str | None
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    approved_tier: MemberTier | None
    admit_tx_hash: str | None

    @classmethod
    def of(cls, row: MembershipApplication) -> ApplicationOut:
        return cls.model_validate(row)


class ReviewIn(_RequestBody):
    note: Note | None = None


class ApproveIn(_RequestBody):
    tier: MemberTier
    note: Note | None = None


class ReasonIn(_RequestBody):
    reason: FilledText = Field(min_length=1, max_length=2000)


class TierIn(ReasonIn):
    tier: MemberTier


class MemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    address: str
    tier: MemberTier
    status: MemberState
    admitted_at: datetime
    application_id: int | None
    last_block: int = Field(description="Block of the last registry event applied to this member.")
    last_tx_hash: str
    updated_at: datetime

    @classmethod
    def of(cls, row: Member | None) -> MemberOut | None:
        return None if row is None else cls.model_validate(row)


class ApprovalOut(BaseModel):
    application: ApplicationOut
    member: MemberOut | None


class MemberChangeOut(BaseModel):
    member: MemberOut | None
    changed: bool = Field(description="False when the member already was as asked: nothing was sent.")
    tx_hashes: list[str]


# --------------------------------------------------------------------------- patents


class PatentIn(_RequestBody):
    publication_number: Text = Field(
        min_length=1, max_length=40, description="Any usual spelling: 'US 10,123,456 B2', 'EP3123456B1'."
    )
    title: Text = Field(min_length=1, max_length=500)
    owner: Text = Field(min_length=1, max_length=200)
    family_id: FamilyId | None = None
    field: FieldOfTechnology
    source: PatentSource
    contributor: Address | None = Field(
        default=None,
        description=(
            "For a contributed patent only: the contributing member, who receives BPC when the patent "
            "is admitted. It must be an active pool member on the register as indexed; anyone else "
            "is refused (422)."
        ),
    )
    filing_date: date | None = None
    grant_date: date | None = None
    expires_on: date = Field(description="The day the patent lapses (no longer in force from that day).")


class PatentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    patent_id: str = Field(description="Compact DOCDB publication number, e.g. US10123456B2.")
    docdb: str = Field(description="Dotted DOCDB form, e.g. US.10123456.B2.")
    country: str
    title: str
    owner: str
    family_id: str | None
    field: FieldOfTechnology
    source: PatentSource
    contributor: str | None
    filing_date: date | None
    grant_date: date | None
    expires_on: date
    status: PatentStatus
    score: int | None
    in_pool_since: date | None
    left_pool_on: date | None
    retirement_reason: RetirementReason | None
    version: int
    mint_policy_version: str | None

    @classmethod
    def of(cls, row: PatentRecord) -> PatentOut:
        return cls.model_validate({**_columns(row), "docdb": parse_patent_number(row.patent_id).docdb()})


class PatentEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: int
    action: str
    from_status: PatentStatus | None
    to_status: PatentStatus
    reason: str
    actor: str
    at: datetime

    @classmethod
    def of(cls, row: PatentEventRecord) -> PatentEventOut:
        return cls.model_validate(row)


class AssessmentIn(_RequestBody):
    score: int = Field(ge=0, le=100, strict=True)
    core: bool = Field(strict=True, description="Whether the patent is core to the pool's technology.")
    notes: Text = Field(default="", max_length=4000)


class AssessmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    patent_id: str
    expert: str
    score: int
    core: bool
    notes: str
    assessed_at: datetime


class MoveIn(_RequestBody):
    note: Note | None = None


class RetireIn(_RequestBody):
    reason: RetirementReason
    note: Note | None = None


class MintOut(BaseModel):
    id: int
    patent_id: str
    recipient: str
    amount_wei: str
    score: int
    policy_version: str
    idempotency_key: str
    status: MintStatus
    tx_hash: str | None
    minted_block: int | None
    error: str | None

    @classmethod
    def of(cls, row: ContributionMint) -> MintOut:
        return cls.model_validate({**_columns(row), "amount_wei": str(row.amount_wei)})

    @classmethod
    def maybe(cls, row: ContributionMint | None) -> MintOut | None:
        return None if row is None else cls.of(row)


class PatentDetailOut(BaseModel):
    patent: PatentOut
    events: list[PatentEventOut]
    assessments: list[AssessmentOut] | None = Field(
        default=None, description="Shown to the foundation's roles only."
    )
    mint: MintOut | None = None


class DecisionOut(BaseModel):
    patent: PatentOut
    admitted: bool
    reasons: list[str] = Field(description="One per criterion of the admission policy, in policy order.")
    score: int | None = Field(description="The admission score: the mean of the expert scores, rounded down.")
    mean_score: str | None = Field(description="The exact mean, e.g. '71 2/3'.")
    mint: MintOut | None


class ExpirySweepOut(BaseModel):
    today: date
    retired: list[str]


class PoolStatsOut(BaseModel):
    live_patents: int
    live_patents_by_field: dict[str, int]
    live_patents_by_country: dict[str, int]
    contributors: int = Field(description="Addresses with at least one contributed patent in the pool.")
    bpc_supply_wei: str
    last_traded_price: str | None = Field(
        description="The price of the last trade on the exchange's BPC market (BPC-TUSD: GET /v1/markets"
        " names it), its ticker's last: a decimal string in the Vault's price units, base units of the"
        " market's quote token (TUSD, 10**6 to the dollar) per 10**18 BPC wei (one BPC), as the market"
        " data writes prices. A trade whose settlement failed for good is not counted. Null until BPC"
        " trades on the exchange, or while the exchange runs no BPC market."
    )


class PoliciesOut(BaseModel):
    admission: dict[str, Any]
    mint: dict[str, Any]


# --------------------------------------------------------------------------- royalties


class RunIn(_RequestBody):
    period_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", examples=["2026-Q4"])
    starts_on: date
    ends_on: date = Field(lt=date.max, description="The period's last day, included.")
    token: Address | None = Field(
        default=None,
        description=(
            "The token to distribute (default: BPC): one the Fund collects, BPC (licence fees), the "
            "Vault's quote token (trading fees) or another token the Fund has received a deposit of. "
            "Any other token is refused (422)."
        ),
    )


class PayoutOut(BaseModel):
    contributor: str
    amount_wei: str
    weight: int
    status: str = Field(
        description=(
            "`pending` until its batch's payout is mined; then `paid`, or `held` when the token refused "
            "to deliver it (the Fund holds it for the contributor, who claims it with `Fund.claim`); "
            "`claimed` once the contributor took it."
        )
    )
    tx_hash: str | None = Field(description="The Fund.payout transaction that paid or held it.")
    claim_tx_hash: str | None = Field(default=None, description="The Fund.claim transaction that took it.")
    claimed_to: str | None = Field(default=None, description="The address the claim paid.")

    @classmethod
    def of(cls, payout: RoyaltyPayout, claim: FundClaim | None) -> PayoutOut:
        return cls(
            contributor=payout.contributor,
            amount_wei=str(payout.amount_wei),
            weight=payout.weight,
            status=payout.status,
            tx_hash=payout.tx_hash,
            claim_tx_hash=claim.tx_hash if claim is not None else None,
            claimed_to=claim.paid_to if claim is not None else None,
        )


class BatchOut(BaseModel):
    batch_index: int
    tag: str = Field(description="The bytes32 tag the batch's Fund.payout carries (FundPayout events).")
    status: str
    tx_hash: str | None
    last_error: str | None = Field(
        default=None,
        description=(
            "Why the Fund refused the batch's last send: the revert, e.g. "
            "`FundInsufficientFree(token=0x…, available=…, needed=…)`. The batch is left `pending` "
            "for a later pay request; null once it is paid."
        ),
    )
    payouts: list[PayoutOut]


class RunOut(BaseModel):
    id: int
    token: str
    period_id: str
    starts_on: date
    ends_on: date
    received_wei: str
    carry_in_wei: str
    paid_wei: str
    carry_out_wei: str
    total_weight: int
    remainder_rule: str
    status: str
    payout_tag: str = Field(
        description="The period's tag; each batch's payout carries a tag derived from it (batches[].tag)."
    )
    created_by: str
    created_at: datetime
    paid_at: datetime | None
    batches: list[BatchOut] = Field(default_factory=list)

    @classmethod
    def of(
        cls,
        run: RoyaltyRun,
        batches: list[tuple[RoyaltyPayoutBatch, list[RoyaltyPayout]]] | None = None,
        claims: dict[int, FundClaim] | None = None,
    ) -> RunOut:
        known_claims = claims or {}
        amounts = {
            name: str(getattr(run, name))
            for name in ("received_wei", "carry_in_wei", "paid_wei", "carry_out_wei")
        }
        return cls.model_validate(
            {
                **_columns(run),
                **amounts,
                "batches": [
                    BatchOut(
                        batch_index=batch.batch_index,
                        tag=batch_payout_tag(run.payout_tag, run.token, batch.batch_index),
                        status=batch.status,
                        tx_hash=batch.tx_hash,
                        last_error=batch.last_error,
                        payouts=[
                            PayoutOut.of(p, known_claims.get(p.claim_id) if p.claim_id is not None else None)
                            for p in payouts
                        ],
                    )
                    for batch, payouts in (batches or [])
                ],
            }
        )


def _columns(row: object) -> dict[str, Any]:
    table = getattr(row, "__table__")  # noqa: B009 - a mapped instance, typed as object here
    return {column.key: getattr(row, column.key) for column in table.columns}


def role_grant_out(grant: FoundationRoleGrant) -> RoleGrantOut:
    return RoleGrantOut.model_validate(grant)
