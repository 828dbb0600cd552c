"""Threshold licences and self-certification: what the chain says, and what a member signs.

Use cases (all read the chain; none writes it — members send their own transactions):

* :func:`thresholds` — the BPC threshold of every tier and the fee licence terms, now;
* :func:`licence_status` — an address's BPR licence at a block;
* :func:`licence_transactions` — the unsigned transactions of ``acquire``, ``release``,
  ``renew`` (a fee licence) and ``buy-fee`` for the caller's own address, after checking
  what the contracts would check, so a refusal comes with a reason before any gas is spent;
* :func:`verify_certificate` — a licence certificate's signature and the holder's on-chain
  licence and membership at a block (``exchange.licenses.certificates`` holds the rules).

Errors: ``ValidationFailed`` (422) for bad input, ``Conflict`` (409) when the member's state
forbids the action, ``ChainRejected`` (409) when the contract's simulation refuses it,
``ChainUnavailable`` (503) when the node cannot answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from eth_account.messages import SignableMessage
from web3 import Web3
from web3.exceptions import Web3Exception

from exchange.chain.errors import ChainError
from exchange.chain.errors import ChainUnavailable as ChainDown
from exchange.chain.pool import Licence, LicenceKind, MemberStatus, PoolChain, Tier
from exchange.chain.problems import to_domain_error
from exchange.chain.runtime import ChainRuntime
from exchange.chain.signatures import is_valid_signature, recover_signer
from exchange.kit.addresses import address_refusal
from exchange.kit.errors import Conflict, ValidationFailed
from exchange.kit.logging import get_logger
from exchange.licenses import transactions
from exchange.licenses.certificates import (
    Certificate,
    ChainFacts,
    LicenceState,
    Reason,
    SignatureVerdict,
    check,
)
from exchange.licenses.indexer import on_chain
from exchange.licenses.transactions import UnsignedTransaction

log = get_logger(__name__)
T = TypeVar("T")


class LicenceAction(StrEnum):
    ACQUIRE = "acquire"
    RELEASE = "release"
    RENEW = "renew"
    BUY_FEE = "buy-fee"


@dataclass(frozen=True, slots=True)
class TierState:
    tier: Tier
    threshold_wei: int | None


@dataclass(frozen=True, slots=True)
class Thresholds:
    block: int
    tiers: list[TierState]
    fee_price_wei: int
    fee_term_s: int


@dataclass(frozen=True, slots=True)
class LicenceAt:
    licence: Licence
    block: int
    block_timestamp: int


@dataclass(frozen=True, slots=True)
class Verification:
    certificate: Certificate
    signature: bytes
    signer: str | None
    reasons: list[Reason]
    licence: LicenceAt


def guarded(action: Callable[[], T]) -> T:
    """Run chain reads, turning chain and web3 errors into domain errors."""
    try:
        return action()
    except ChainError as exc:
        raise to_domain_error(exc) from exc
    except (Web3Exception, OSError) as exc:
        raise to_domain_error(ChainDown(str(exc))) from exc


def address(text: str) -> str:
    refusal = address_refusal(text)
    if refusal is not None:
        raise ValidationFailed(f"{text[:64]!r} {refusal}", extra={"input": text[:64]})
    return str(Web3.to_checksum_address(text))


def block_at(pool: PoolChain, block: int | None) -> tuple[int, int]:
    """The number and timestamp of ``block`` (the head if None), refused (422) past the head or
    before the pool's deployment."""
    head = int(pool.w3.eth.block_number)
    if block is not None and block > head:
        raise ValidationFailed(f"block {block} is after the chain's head {head}", extra={"head": head})
    if block is not None and block < (first := pool.deployed_by):
        # No pool contract answers a call there: the read would fail as if the node were down.
        raise ValidationFailed(
            f"block {block} is before block {first}, by which the pool was deployed",
            extra={"field": "block", "first_block": first},
        )
    data = pool.w3.eth.get_block(head if block is None else block)
    return int(data["number"]), int(data["timestamp"])


async def chain_time(runtime: ChainRuntime) -> int:
    """The timestamp of the latest block: the time a certificate is judged at by default."""
    pool = runtime.pool
    return await on_chain(runtime, lambda: guarded(lambda: block_at(pool, None)[1]))


async def thresholds(runtime: ChainRuntime) -> Thresholds:
    pool = runtime.pool

    def read() -> Thresholds:
        number, _ = block_at(pool, None)
        tiers = []
        for tier in Tier:
            configured = tier is Tier.NON_PROFIT or pool.registry.call(
                "tierReference", int(tier), block=number
            ) != ("0x" + "0" * 40)
            tiers.append(TierState(tier, pool.threshold(tier, block=number) if configured else None))
        price = int(pool.gate.call("feeLicencePrice", block=number))
        term = int(pool.gate.call("feeLicenceTerm", block=number))
        return Thresholds(number, tiers, price, term)

    return await on_chain(runtime, lambda: guarded(read))


def _licence_at(pool: PoolChain, holder: str, block: int | None) -> LicenceAt:
    number, timestamp = block_at(pool, block)
    return LicenceAt(pool.licence(holder, block=number), number, timestamp)


async def licence_status(runtime: ChainRuntime, holder: str, block: int | None) -> LicenceAt:
    checked = address(holder)
    return await on_chain(runtime, lambda: guarded(lambda: _licence_at(runtime.pool, checked, block)))


async def licence_transactions(
    runtime: ChainRuntime, account: str, action: LicenceAction, amount_wei: int | None
) -> list[UnsignedTransaction]:
    """The transactions `account` signs to take `action`, checked against the chain first."""
    pool, chain_id = runtime.pool, runtime.deployment.chain_id

    def plan() -> list[UnsignedTransaction]:
        licence = pool.licence(account)
        member = pool.member(account)
        if action is LicenceAction.ACQUIRE:
            return _acquire(pool, chain_id, account, member.status, member.tier, licence, amount_wei)
        if amount_wei is not None:
            raise ValidationFailed(f"{action} takes no amount")
        if action is LicenceAction.RELEASE:
            if licence.kind is LicenceKind.NONE:
                raise Conflict(f"{account} holds no licence to release")
            if licence.kind is LicenceKind.FEE:
                raise Conflict("a fee licence ends by expiry, not by release")
            return [
                transactions.build(
                    pool.gate,
                    "release",
                    [],
                    sender=account,
                    chain_id=chain_id,
                    description=f"release the licence; {licence.locked_bpc_wei} BPC base units return",
                    simulate=True,
                )
            ]
        price_wei, term_s = pool.fee_licence_terms()
        if price_wei == 0 or term_s == 0:
            raise Conflict("the foundation offers no fee licence now")
        if member.status is not MemberStatus.NONE:  # the LicenseGate refuses both to members
            raise Conflict("fee licences are for non-members; members lock the threshold (acquire)")
        if action is LicenceAction.RENEW:
            if licence.kind is not LicenceKind.FEE:
                raise Conflict(f"{account} holds no fee licence to renew")
            function, what = "renewFeeLicence", f"renew the fee licence for {term_s} s"
        else:
            if licence.licensed:
                raise Conflict(f"{account} already holds a live licence")
            function, what = "buyFeeLicence", f"buy a fee licence for {term_s} s"
        _require_balance(pool, account, price_wei)
        return transactions.with_allowance(
            pool.bpc,
            pool.gate,
            price_wei,
            sender=account,
            chain_id=chain_id,
            then=(function, [], f"{what}, paying {price_wei} BPC base units into the fund"),
        )

    steps = await on_chain(runtime, lambda: guarded(plan))
    log.info("licence.transactions_built", account=account, action=str(action), steps=len(steps))
    return steps


def _acquire(
    pool: PoolChain,
    chain_id: int,
    account: str,
    status: MemberStatus,
    tier: Tier,
    licence: Licence,
    amount_wei: int | None,
) -> list[UnsignedTransaction]:
    if status is not MemberStatus.ACTIVE:
        raise Conflict(f"{account} is not an active pool member (status {status.name.lower()})")
    if licence.licensed:
        raise Conflict(f"{account} already holds a live licence")
    threshold_wei = pool.threshold(tier)
    amount = threshold_wei if amount_wei is None else amount_wei
    if tier is Tier.NON_PROFIT and amount:
        raise ValidationFailed("non-profit members are licensed free and lock nothing: omit amount_wei")
    if tier is not Tier.NON_PROFIT and (amount == 0 or amount < threshold_wei):
        raise ValidationFailed(
            f"{amount} BPC base units is below the {tier.name.lower()} threshold {threshold_wei}",
            extra={"threshold_wei": str(threshold_wei)},
        )
    _require_balance(pool, account, amount)
    return transactions.with_allowance(
        pool.bpc,
        pool.gate,
        amount,
        sender=account,
        chain_id=chain_id,
        then=("acquire", [amount], f"lock {amount} BPC base units for a BPR licence"),
    )


def _require_balance(pool: PoolChain, account: str, amount_wei: int) -> None:
    balance = pool.bpc_balance(account)
    if balance < amount_wei:
        raise Conflict(
            f"{account} holds {balance} BPC base units and needs {amount_wei}",
            extra={"balance_wei": str(balance), "needed_wei": str(amount_wei)},
        )


# --- certificates ---------------------------------------------------------------------------------


def parse_signature(text: str) -> bytes:
    try:
        return bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise ValidationFailed("the signature is not hex bytes") from None


def signature_verdict(
    w3: Web3, holder: str, message: SignableMessage, signature: bytes, block: int
) -> tuple[SignatureVerdict, str | None]:
    """Who signed: the holder's key, the holder as an ERC-1271 wallet (asked at `block`),
    someone else, or no one."""
    signer = recover_signer(message, signature)
    if signer == holder or is_valid_signature(w3, holder, message, signature, block=block):
        return SignatureVerdict.VALID, signer
    return (SignatureVerdict.MALFORMED if signer is None else SignatureVerdict.OTHER_SIGNER), signer


def verify_on_chain(
    pool: PoolChain, certificate: Certificate, signature: bytes, block: int | None
) -> Verification:
    """Check `certificate` against `pool` at `block` (default latest): the holder's licence, its
    membership (an expelled member's certificate fails before its licence is revoked) and, for a
    contract wallet, its ERC-1271 answer, all at that one block. Blocking; raises chain errors."""
    at = _licence_at(pool, certificate.holder, block)
    member = pool.member(certificate.holder, block=at.block)
    verdict, signer = signature_verdict(
        pool.w3, certificate.holder, certificate.signable(), signature, at.block
    )
    facts = ChainFacts(
        chain_id=int(pool.w3.eth.chain_id),
        bpr=pool.bpr.address,
        registry=pool.registry.address,
        block_number=at.block,
        block_timestamp=at.block_timestamp,
        licence_kind=LicenceState(int(at.licence.kind)),
        licence_expires_at=at.licence.expires_at,
        licensed=at.licence.licensed,
        licence_since_block=at.licence.since_block,
        holder_expelled=member.status is MemberStatus.EXPELLED,
    )
    return Verification(certificate, signature, signer, check(certificate, verdict, signer, facts), at)


async def verify_certificate(
    runtime: ChainRuntime, certificate: Certificate, signature: bytes, block: int | None
) -> Verification:
    result = await on_chain(
        runtime, lambda: guarded(lambda: verify_on_chain(runtime.pool, certificate, signature, block))
    )
    log.info(
        "licence.certificate_verified",
        holder=certificate.holder,
        valid=not result.reasons,
        reasons=[reason.code.value for reason in result.reasons],
        block=result.licence.block,
    )
    return result
