"""Membership use cases (white paper §5.1.2): apply, review, approve or reject, and keep the register.

Application ── review (registrar) ──▶ under review ── approve with a tier (council) ──▶ approved
                                                   └─ reject (council) ──────────────▶ rejected

Approval admits the wallet on the PoolRegistry; afterwards the registrar
re-tiers, suspends and reinstates members and the council expels them
(expulsion also revokes the member's licence through the LicenseGate).

Rules
-----
* The chain decides. Every action reads the member's on-chain record first,
  sends the transaction only if the record is not already what was asked, then
  lets the indexer apply the events in the same database transaction. ``members``
  therefore always shows what the registry holds.
* Retrying is safe. Asking for the state a member is already in changes nothing
  and records nothing. An approval whose transaction was mined but whose
  database write was lost (a crash in between) finds the wallet admitted with
  the approved tier and completes without a second transaction.
* A decision is final: a rejected application cannot be approved, and an
  approved one is approved again only with its tier.
* Only non-profit applicants can be given the non-profit tier (free licences, §3.3).
* An applicant applies for their own wallet (the signed-in address), with at most
  one open application at a time; resubmitting the same application returns it.
* Every action that changes something appends one audit entry with the member
  (or application) before and after and the transaction hashes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from hexbytes import HexBytes
from sqlalchemy.ext.asyncio import AsyncSession
from web3.types import TxReceipt

from exchange.chain.pool import LicenceKind, MemberStatus, PoolChain
from exchange.chain.pool import Member as ChainMember
from exchange.kit.errors import Conflict, NotFound, ValidationFailed
from exchange.kit.logging import get_logger
from exchange.pool import repository
from exchange.pool.indexer import CHAIN_TIERS, STATE_NAMES, TIER_NAMES, hex32
from exchange.pool.models import (
    ApplicationStatus,
    EnterpriseSize,
    Member,
    MembershipApplication,
    MemberTier,
)
from exchange.pool.service import PoolContext, application_snapshot, member_snapshot, record_audit

log = get_logger(__name__)


@dataclass(frozen=True)
class ApplicationData:
    organisation: str
    country: str
    enterprise_size: EnterpriseSize
    size_evidence: str
    non_profit: bool
    contact_name: str
    contact_email: str


@dataclass(frozen=True)
class MemberChange:
    """The member after an action, the transactions sent, and whether anything changed."""

    member: Member | None
    tx_hashes: tuple[str, ...]
    changed: bool


def _tx(receipt: TxReceipt) -> str:
    return hex32(receipt["transactionHash"])


def _registry_call(pool: PoolChain, tx_hash: str) -> tuple[str, str] | None:
    """Blocking: (function, account) of the PoolRegistry call transaction `tx_hash` made, if it
    called one that names a member (admit, setTier, suspend, reinstate, expel)."""
    tx = pool.w3.eth.get_transaction(HexBytes(tx_hash))
    if tx.get("to") != pool.registry.address:
        return None
    function, args = pool.registry.contract.decode_function_input(tx["input"])
    account = args.get("account")
    return (str(function.fn_name), str(account)) if isinstance(account, str) else None


# The PoolRegistry function each member change sends.
_REGISTRY_FUNCTIONS = {
    "member.set_tier": "setTier",
    "member.suspend": "suspend",
    "member.reinstate": "reinstate",
    "member.expel": "expel",
}


async def submit_application(
    session: AsyncSession, *, wallet: str, data: ApplicationData, at: datetime
) -> tuple[MembershipApplication, bool]:
    """File an application for ``wallet``; the same open application again is returned, not duplicated."""
    existing = await repository.open_application(session, wallet)
    if existing is not None:
        same = (
            existing.organisation,
            existing.country,
            existing.enterprise_size,
            existing.size_evidence,
            existing.non_profit,
            existing.contact_name,
            existing.contact_email,
        ) == (
            data.organisation,
            data.country,
            data.enterprise_size.value,
            data.size_evidence,
            data.non_profit,
            data.contact_name,
            data.contact_email,
        )
        if same:
            return existing, False
        raise Conflict(
            f"{wallet} already has an open application ({existing.id}, {existing.status})",
            extra={"application_id": existing.id},
        )
    current = await repository.member(session, wallet)
    if current is not None:
        raise Conflict(f"{wallet} is already a member ({current.status})")
    row = await repository.add_application(
        session,
        MembershipApplication(
            wallet=wallet,
            organisation=data.organisation,
            country=data.country,
            enterprise_size=data.enterprise_size.value,
            size_evidence=data.size_evidence,
            non_profit=data.non_profit,
            contact_name=data.contact_name,
            contact_email=data.contact_email,
            status=ApplicationStatus.SUBMITTED.value,
            submitted_at=at,
        ),
    )
    log.info("pool.application_submitted", application_id=row.id, wallet=wallet)
    return row, True


async def _application(session: AsyncSession, application_id: int) -> MembershipApplication:
    row = await repository.application(session, application_id, for_update=True)
    if row is None:
        raise NotFound(f"no membership application {application_id}")
    return row


async def review_application(
    session: AsyncSession, *, application_id: int, actor: str, note: str | None, at: datetime
) -> MembershipApplication:
    """submitted → under_review: the registrar has checked the evidence and passes it to the council."""
    row = await _application(session, application_id)
    if row.status == ApplicationStatus.UNDER_REVIEW:
        return row
    if row.status != ApplicationStatus.SUBMITTED:
        raise Conflict(f"application {application_id} is {row.status}; only a submitted one can be reviewed")
    before = application_snapshot(row)
    row.status = ApplicationStatus.UNDER_REVIEW.value
    row.reviewed_by, row.reviewed_at, row.review_note = actor, at, note
    await session.flush()
    await record_audit(
        session,
        actor=actor,
        action="membership.review",
        subject_type="membership_application",
        subject_id=str(row.id),
        at=at,
        before=before,
        after=row,
        reason=note,
    )
    return row


async def approve_application(
    session: AsyncSession,
    context: PoolContext,
    *,
    application_id: int,
    tier: MemberTier,
    actor: str,
    note: str | None,
    at: datetime,
) -> tuple[MembershipApplication, Member | None]:
    """under_review → approved: admit the wallet on the registry with ``tier``."""
    row = await _application(session, application_id)
    await context.indexer.catch_up(session)
    if row.status == ApplicationStatus.APPROVED:
        if row.approved_tier != tier.value:
            raise Conflict(
                f"application {application_id} was approved with tier {row.approved_tier}, not {tier.value}"
            )
        return row, await repository.member(session, row.wallet)
    if row.status == ApplicationStatus.REJECTED:
        raise Conflict(
            f"application {application_id} was already rejected and cannot be approved (a decision is final)"
        )
    if row.status != ApplicationStatus.UNDER_REVIEW:
        raise Conflict(
            f"application {application_id} is {row.status}; "
            "the registrar reviews it before the council decides"
        )
    if tier is MemberTier.NON_PROFIT and not row.non_profit:
        raise ValidationFailed("the non-profit tier is for non-profit applicants only (white paper §3.3)")

    pool = context.chain.pool
    wallet, chain_tier = row.wallet, CHAIN_TIERS[tier]
    on_chain = await context.chain.run(lambda: pool.member(wallet))
    tx_hashes: tuple[str, ...] = ()
    if on_chain.status is MemberStatus.NONE:
        receipt = await context.chain.run(lambda: pool.admit(wallet, chain_tier))
        tx_hashes = (_tx(receipt),)
    elif not (on_chain.status is MemberStatus.ACTIVE and on_chain.tier is chain_tier):
        raise Conflict(
            f"{wallet} is already on the register as {_describe(on_chain)}",
            extra={"member_status": STATE_NAMES[on_chain.status].value},
        )
    # else: admitted by an earlier attempt whose database write was lost; complete it.

    before = application_snapshot(row)
    row.status = ApplicationStatus.APPROVED.value
    row.approved_tier = tier.value
    row.decided_by, row.decided_at, row.decision_note = actor, at, note
    row.admit_tx_hash = tx_hashes[0] if tx_hashes else row.admit_tx_hash
    await session.flush()
    await context.indexer.catch_up(session)
    member = await repository.member(session, wallet)
    if member is not None and member.application_id is None:
        # Indexed before this approval was recorded (an earlier attempt's admission, found by
        # the catch-up above or by the background indexer): no approved application to link then.
        member.application_id = row.id
        await session.flush()
    if not tx_hashes and member is not None:
        # Completing an admission whose answer was lost: named when it is the member's latest
        # registry transaction (a change made since, a re-tier say, hides it).
        last = member.last_tx_hash
        if await context.chain.run(lambda: _registry_call(pool, last)) == ("admit", wallet):
            tx_hashes = (last,)
            row.admit_tx_hash = row.admit_tx_hash or last
    await record_audit(
        session,
        actor=actor,
        action="membership.approve",
        subject_type="membership_application",
        subject_id=str(row.id),
        at=at,
        before={"application": before, "member": None},
        after={"application": application_snapshot(row), "member": member_snapshot(member)},
        tx_hashes=tx_hashes,
        reason=note,
    )
    log.info("pool.member_admitted", application_id=row.id, wallet=wallet, tier=tier.value)
    return row, member


async def reject_application(
    session: AsyncSession,
    context: PoolContext,
    *,
    application_id: int,
    actor: str,
    reason: str,
    at: datetime,
) -> MembershipApplication:
    """submitted or under_review → rejected, unless the wallet is a member already.

    An applicant is no member when it applies, and only an approval admits it: a member means
    an approval reached the chain and its answer was lost (a timeout, say). Rejecting would
    leave a member (active, or suspended and reinstated later) the database calls rejected, so
    it is refused: approving completes it, after reinstating a suspended member. An expelled
    member is final and can no longer be approved: its application may be rejected.
    """
    row = await _application(session, application_id)
    if row.status == ApplicationStatus.REJECTED:
        if row.decision_note != reason:  # a retry repeats the reason; another is another rejection
            raise Conflict(
                f"application {application_id} was rejected already, for another reason: "
                f"{row.decision_note!r}",
                extra={"decision_note": row.decision_note},
            )
        return row
    if row.status not in (ApplicationStatus.SUBMITTED, ApplicationStatus.UNDER_REVIEW):
        raise Conflict(f"application {application_id} is {row.status} and can no longer be rejected")
    pool, wallet = context.chain.pool, row.wallet
    on_chain = await context.chain.run(lambda: pool.member(wallet))
    if on_chain.status in (MemberStatus.ACTIVE, MemberStatus.SUSPENDED):
        raise Conflict(
            f"{wallet} is already on the register as {_describe(on_chain)}: an approval of this"
            " application reached the chain. Approve it with that tier (after its review, and once"
            " the member is reinstated if suspended) to record the admission, then expel the member"
            " if it should not be one",
            extra={"member_status": STATE_NAMES[on_chain.status].value},
        )
    before = application_snapshot(row)
    row.status = ApplicationStatus.REJECTED.value
    row.decided_by, row.decided_at, row.decision_note = actor, at, reason
    await session.flush()
    await record_audit(
        session,
        actor=actor,
        action="membership.reject",
        subject_type="membership_application",
        subject_id=str(row.id),
        at=at,
        before=before,
        after=row,
        reason=reason,
    )
    return row


def _describe(member: ChainMember) -> str:
    if member.status is MemberStatus.NONE:
        return "not a member"
    return f"{STATE_NAMES[member.status].value} ({TIER_NAMES[member.tier].value})"


Plan = Callable[[ChainMember], list[Callable[[PoolChain], TxReceipt]] | None]


async def _change_member(
    session: AsyncSession,
    context: PoolContext,
    *,
    address: str,
    action: str,
    actor: str,
    reason: str,
    at: datetime,
    plan: Plan,
    extra_steps: Callable[[PoolChain], list[Callable[[PoolChain], TxReceipt]]] | None = None,
) -> MemberChange:
    """Read the member on chain, send what ``plan`` says (nothing if it is already so), index, audit."""
    await context.indexer.catch_up(session)
    pool = context.chain.pool
    on_chain = await context.chain.run(lambda: pool.member(address))
    if on_chain.status is MemberStatus.NONE:
        raise NotFound(f"{address} is not a member")
    steps = plan(on_chain) or []
    if extra_steps is not None:
        steps += await context.chain.run(lambda: extra_steps(pool))
    current = await repository.member(session, address)
    before = member_snapshot(current)

    async def audit(after: Member | None, tx_hashes: list[str], why: str, was: object = None) -> None:
        await record_audit(
            session,
            actor=actor,
            action=action,
            subject_type="member",
            subject_id=address,
            at=at,
            before=was,
            after=member_snapshot(after),
            tx_hashes=tx_hashes,
            reason=why,
        )

    # The register's latest change of this member, if it is this very change and no audit entry
    # names it: an earlier attempt whose answer was lost after its transaction was mined (or the
    # same call made on chain directly). This request records it.
    found: list[str] = []
    if current is not None and not await repository.is_audited(session, current.last_tx_hash):
        last = current.last_tx_hash
        if await context.chain.run(lambda: _registry_call(pool, last)) == (
            _REGISTRY_FUNCTIONS[action],
            address,
        ):
            found = [last]
    found_note = f"{reason} (found done on chain already by {found[0]})" if found else reason
    if not steps:
        if found:
            await audit(current, found, found_note)
        return MemberChange(current, (), False)
    tx_hashes = []
    for step in steps:
        receipt = await context.chain.run(lambda step=step: step(pool))  # type: ignore[misc]
        tx_hashes.append(_tx(receipt))
    await context.indexer.catch_up(session)
    member = await repository.member(session, address)
    await audit(member, found + tx_hashes, found_note, was=before)
    log.info("pool.member_changed", action=action, address=address, tx_hashes=tx_hashes)
    return MemberChange(member, tuple(tx_hashes), True)


def _refuse_expelled(member: ChainMember, what: str) -> None:
    if member.status is MemberStatus.EXPELLED:
        raise Conflict(f"{member.account} was expelled; expulsion is final and it cannot be {what}")


async def change_tier(
    session: AsyncSession,
    context: PoolContext,
    *,
    address: str,
    tier: MemberTier,
    actor: str,
    reason: str,
    at: datetime,
) -> MemberChange:
    chain_tier = CHAIN_TIERS[tier]

    def plan(member: ChainMember) -> list[Callable[[PoolChain], TxReceipt]] | None:
        _refuse_expelled(member, "re-tiered")
        if member.tier is chain_tier:
            return None
        return [lambda pool: pool.set_tier(address, chain_tier)]

    def revoke_free_licence(pool: PoolChain) -> list[Callable[[PoolChain], TxReceipt]]:
        # A member leaving the non-profit tier must lock BPC for a licence: its free one ends
        # (LicenseGate.revoke), also on a retry after the re-tier went out but not the revocation.
        if tier is MemberTier.NON_PROFIT or pool.licence(address).kind is not LicenceKind.NON_PROFIT:
            return []
        return [lambda pool: pool.revoke(address)]

    if tier is MemberTier.NON_PROFIT:
        application = await repository.approved_application(session, address)
        if application is None or not application.non_profit:
            raise ValidationFailed("the non-profit tier is for members that applied as non-profits")
    return await _change_member(
        session,
        context,
        address=address,
        action="member.set_tier",
        actor=actor,
        reason=reason,
        at=at,
        plan=plan,
        extra_steps=revoke_free_licence,
    )


async def suspend(
    session: AsyncSession, context: PoolContext, *, address: str, actor: str, reason: str, at: datetime
) -> MemberChange:
    def plan(member: ChainMember) -> list[Callable[[PoolChain], TxReceipt]] | None:
        _refuse_expelled(member, "suspended")
        if member.status is MemberStatus.SUSPENDED:
            return None
        return [lambda pool: pool.suspend(address)]

    return await _change_member(
        session,
        context,
        address=address,
        action="member.suspend",
        actor=actor,
        reason=reason,
        at=at,
        plan=plan,
    )


async def reinstate(
    session: AsyncSession, context: PoolContext, *, address: str, actor: str, reason: str, at: datetime
) -> MemberChange:
    def plan(member: ChainMember) -> list[Callable[[PoolChain], TxReceipt]] | None:
        _refuse_expelled(member, "reinstated")
        if member.status is MemberStatus.ACTIVE:
            return None
        return [lambda pool: pool.reinstate(address)]

    return await _change_member(
        session,
        context,
        address=address,
        action="member.reinstate",
        actor=actor,
        reason=reason,
        at=at,
        plan=plan,
    )


async def expel(
    session: AsyncSession, context: PoolContext, *, address: str, actor: str, reason: str, at: datetime
) -> MemberChange:
    """Expel the member and revoke its licence (its locked BPC goes back to it)."""

    def plan(member: ChainMember) -> list[Callable[[PoolChain], TxReceipt]] | None:
        if member.status is MemberStatus.EXPELLED:
            return None
        return [lambda pool: pool.expel(address)]

    def revoke_if_licensed(pool: PoolChain) -> list[Callable[[PoolChain], TxReceipt]]:
        # Also after an expulsion whose revocation was interrupted: a retry finishes it.
        if pool.bpr_balance(address) == 0:
            return []
        return [lambda pool: pool.revoke(address)]

    return await _change_member(
        session,
        context,
        address=address,
        action="member.expel",
        actor=actor,
        reason=reason,
        at=at,
        plan=plan,
        extra_steps=revoke_if_licensed,
    )
