"""Royalty distribution for one period (white paper §3.3, §3.5 "Proof of Patent").

Fees that reach the foundation's fund in a period (plus what the previous period
carried) are shared among the members whose contributed patents are in the pool,
in proportion to the patents' weights. :func:`distribute` computes the payouts;
the chain adapter sends them in batches, each with
``Fund.payout(token, recipients, amounts, tag)`` and a tag of its own,
:func:`batch_payout_tag`, derived from the run's :func:`payout_tag`;
:func:`statements_json` and :func:`statements_csv` render what each contributor
is told, with how its payout stands on chain (:class:`PayoutState`).

Rules and invariants
--------------------
* A patent's weight is its admission score (0 to 100). Its contributor's weight
  is the sum over their patents that count for the period.
* Partial periods do not pro-rate: a patent counts for a period exactly when it
  is in the pool on the period's last day, ``ends_on`` (``in_pool_from <= ends_on <
  in_pool_until``). A patent admitted on the last day earns the whole period; one
  that was retired or lapsed on or before the last day earns nothing for it.
  ``in_pool_until`` is the earlier of the day it left the pool and the day it
  lapsed, so an expired patent stops earning even before an expiry sweep
  retires it.
* Money is integers. With ``D = received_wei + carry_in_wei``, total weight
  ``W`` and contributor weight ``w``, each contributor first gets
  ``floor(D * w / W)``. The remainder ``R`` (fewer wei than there are paid
  contributors) is either carried to the next period (``RemainderRule.CARRY``,
  the default: the fund keeps it for now and nothing is paid that was not
  earned) or paid one wei each to the ``R`` contributors with the largest
  fractional parts, ties going to the lower address (``LARGEST_REMAINDER``).
  Either way ``sum(payouts) + carry_out_wei == received_wei + carry_in_wei``
  exactly, and every payout is within 1 wei of ``D * w / W``.
* Zero weights get nothing and no payout row. If no patent counts (``W = 0``),
  nothing is paid and everything carries.
* Deterministic: payouts and statements are ordered by contributor address (as
  a number), patents by id; the order of the input stakes does not matter.
* Statements list every contributor with a stake, including those whose
  patents did not count, so a contributor can see why they were paid nothing.
  In JSON, amounts are decimal strings (a uint256 does not fit a JSON number
  that JavaScript reads exactly).
* Tags: a run's tag is :func:`payout_tag` of its period id. The Fund pays a tag
  once (``Fund.paidTags``, ``FundTagAlreadyPaid``), so every payout batch has
  its own tag: ``keccak256(abi.encodePacked(bytes32 run_tag, address token,
  uint256 batch_index))`` (:func:`batch_payout_tag`). The token is in it because
  runs of one period for two tokens share the run tag; the batch's index in its
  run, not a database id, so that the tag follows from the run alone.
* A payout the token refuses to deliver (a recipient it blocks) does not stop its
  batch: the Fund holds it for the contributor (``FundPayoutHeld``), who claims it
  (``Fund.claim``). A statement says so: ``payout_status`` ``held`` and
  ``held_wei``, until the claim (``claimed``, ``held_wei`` back to 0). The run's
  totals do not change: a held payout was paid out of the distribution all the same.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Final

from eth_utils.address import is_hex_address, to_canonical_address
from eth_utils.crypto import keccak

from exchange.kit.errors import ValidationFailed
from exchange.pool.patents import (
    InvalidPatentRecord,
    Patent,
    PatentSource,
    PatentStatus,
    contributor_address,
)

UINT256_MAX: Final = 2**256 - 1
_PERIOD_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_TAG: Final = re.compile(r"0x[0-9a-fA-F]{64}", re.ASCII)
CSV_COLUMNS: Final = (
    "period_id",
    "token",
    "contributor",
    "weight",
    "total_weight",
    "distributable_wei",
    "payout_wei",
    "counted_patents",
    "uncounted_patents",
    "payout_batch_tag",
    "payout_status",
    "held_wei",
)


class InvalidDistribution(ValidationFailed):
    type_slug = "invalid-royalty-distribution"
    title = "Invalid royalty distribution"


class RemainderRule(StrEnum):
    CARRY = "carry"
    LARGEST_REMAINDER = "largest_remainder"


@dataclass(frozen=True, slots=True)
class RoyaltyPeriod:
    """A period from ``starts_on`` to ``ends_on``, both included."""

    period_id: str
    starts_on: date
    ends_on: date

    def __post_init__(self) -> None:
        if not _PERIOD_ID.fullmatch(self.period_id):
            raise InvalidDistribution(
                f"a period id is 1 to 64 letters, digits, '.', '_' or '-', not {self.period_id!r}"
            )
        if self.starts_on > self.ends_on:
            raise InvalidDistribution(f"period {self.period_id} ends before it starts")


@dataclass(frozen=True, slots=True)
class RoyaltyStake:
    """One contributed patent's claim: its weight while it is in the pool."""

    patent_id: str
    contributor: str
    weight: int
    in_pool_from: date
    in_pool_until: date | None = None  # first day out of the pool (left or lapsed); None: still in

    def __post_init__(self) -> None:
        if not self.patent_id:
            raise InvalidDistribution("a stake names its patent")
        if type(self.weight) is not int or self.weight < 0:
            raise InvalidDistribution(f"a weight is a non-negative integer, not {self.weight!r}")
        if self.in_pool_until is not None and self.in_pool_until < self.in_pool_from:
            raise InvalidDistribution(f"patent {self.patent_id} leaves the pool before it enters")
        try:
            checksummed = contributor_address(self.contributor)
        except InvalidPatentRecord as error:
            raise InvalidDistribution(error.detail) from error
        object.__setattr__(self, "contributor", checksummed)

    def counts_on(self, day: date) -> bool:
        """True when the patent is in the pool on ``day``."""
        return self.in_pool_from <= day and (self.in_pool_until is None or day < self.in_pool_until)


@dataclass(frozen=True, slots=True)
class Payout:
    contributor: str
    amount_wei: int
    weight: int


@dataclass(frozen=True, slots=True)
class PayoutState:
    """How one contributor's payout stands on chain.

    ``status`` is ``pending`` (its batch not mined yet), ``paid``, ``held`` (the Fund holds
    it for the contributor, ``held_wei``) or ``claimed`` (``claim_tx_hash``).
    """

    status: str
    held_wei: int = 0
    tx_hash: str | None = None
    claim_tx_hash: str | None = None


@dataclass(frozen=True, slots=True)
class StatementLine:
    patent_id: str
    weight: int
    counted: bool


@dataclass(frozen=True, slots=True)
class Statement:
    """What one contributor is told about one period."""

    period_id: str
    contributor: str
    weight: int
    total_weight: int
    distributable_wei: int
    payout_wei: int
    patents: tuple[StatementLine, ...]


@dataclass(frozen=True, slots=True)
class Distribution:
    period: RoyaltyPeriod
    received_wei: int
    carry_in_wei: int
    total_weight: int
    rule: RemainderRule
    payouts: tuple[Payout, ...]
    carry_out_wei: int
    statements: tuple[Statement, ...]

    @property
    def distributable_wei(self) -> int:
        return self.received_wei + self.carry_in_wei

    @property
    def paid_wei(self) -> int:
        return sum(payout.amount_wei for payout in self.payouts)


def stake_of(patent: Patent) -> RoyaltyStake:
    """The royalty stake of an admitted, contributed patent."""
    if patent.source is not PatentSource.CONTRIBUTED or patent.contributor is None:
        raise InvalidDistribution(f"patent {patent.patent_id} was not contributed and earns no royalties")
    admitted = patent.status in (PatentStatus.IN_POOL, PatentStatus.RETIRED)
    if not admitted or patent.score is None or patent.in_pool_since is None:
        raise InvalidDistribution(f"patent {patent.patent_id} was never admitted to the pool")
    until = patent.expires_on if patent.left_pool_on is None else min(patent.left_pool_on, patent.expires_on)
    return RoyaltyStake(
        patent_id=patent.patent_id,
        contributor=patent.contributor,
        weight=patent.score,
        in_pool_from=patent.in_pool_since,
        in_pool_until=until,
    )


def distribute(
    period: RoyaltyPeriod,
    *,
    received_wei: int,
    carry_in_wei: int,
    stakes: Iterable[RoyaltyStake],
    rule: RemainderRule = RemainderRule.CARRY,
) -> Distribution:
    """Share ``received_wei + carry_in_wei`` among the contributors of the counting stakes."""
    for name, value in (("received_wei", received_wei), ("carry_in_wei", carry_in_wei)):
        if type(value) is not int or value < 0:
            raise InvalidDistribution(f"{name} is a non-negative integer, not {value!r}")
    distributable_wei = received_wei + carry_in_wei
    if distributable_wei > UINT256_MAX:
        raise InvalidDistribution("the distributable amount does not fit a uint256")

    by_contributor: dict[str, list[StatementLine]] = {}
    seen: set[str] = set()
    for stake in stakes:
        if stake.patent_id in seen:
            raise InvalidDistribution(f"patent {stake.patent_id} has two stakes")
        seen.add(stake.patent_id)
        line = StatementLine(stake.patent_id, stake.weight, stake.counts_on(period.ends_on))
        by_contributor.setdefault(stake.contributor, []).append(line)

    contributors = sorted(by_contributor, key=_address_order)
    weights = {c: sum(line.weight for line in by_contributor[c] if line.counted) for c in contributors}
    total_weight = sum(weights.values())
    amounts = _shares(distributable_wei, contributors, weights, total_weight, rule)
    carry_out_wei = distributable_wei - sum(amounts.values())

    payouts = tuple(Payout(c, amounts[c], weights[c]) for c in contributors if amounts[c] > 0)
    statements = tuple(
        Statement(
            period_id=period.period_id,
            contributor=c,
            weight=weights[c],
            total_weight=total_weight,
            distributable_wei=distributable_wei,
            payout_wei=amounts[c],
            patents=tuple(sorted(by_contributor[c], key=lambda line: line.patent_id)),
        )
        for c in contributors
    )
    return Distribution(
        period=period,
        received_wei=received_wei,
        carry_in_wei=carry_in_wei,
        total_weight=total_weight,
        rule=rule,
        payouts=payouts,
        carry_out_wei=carry_out_wei,
        statements=statements,
    )


def payout_tag(period_id: str) -> str:
    """The ``bytes32`` tag of a period's ``Fund.payout``: keccak256("royalty-period" ‖ id), 0x-hex."""
    if not _PERIOD_ID.fullmatch(period_id):
        raise InvalidDistribution(f"{period_id!r} is not a period id")
    return "0x" + keccak(b"royalty-period\x1f" + period_id.encode("ascii")).hex()


def batch_payout_tag(run_tag: str, token: str, batch_index: int) -> str:
    """The ``bytes32`` tag of one payout batch, 0x-hex; the Fund pays each tag once.

    ``keccak256(abi.encodePacked(bytes32 run_tag, address token, uint256 batch_index))``,
    where ``run_tag`` is the run's :func:`payout_tag`.
    """
    if not _TAG.fullmatch(run_tag):
        raise InvalidDistribution(f"{run_tag!r} is not a 0x-hex bytes32 tag")
    if type(batch_index) is not int or not 0 <= batch_index <= UINT256_MAX:
        raise InvalidDistribution(f"a batch index is a non-negative integer, not {batch_index!r}")
    if not is_hex_address(token):
        raise InvalidDistribution(f"{token!r} is not a token address")
    packed = bytes.fromhex(run_tag[2:]) + to_canonical_address(token) + batch_index.to_bytes(32, "big")
    return "0x" + keccak(packed).hex()


def statements_json(
    distribution: Distribution,
    *,
    token: str,
    batch_tags: Mapping[str, str],
    payout_states: Mapping[str, PayoutState] | None = None,
) -> str:
    """The period's totals and every contributor's statement, as JSON (amounts as strings).

    ``token`` is what the run distributes (amounts are in its base units), and ``batch_tags``
    the tag of the Fund payout that pays each contributor paid anything
    (:func:`batch_payout_tag`): the tag its ``FundPayout`` (or ``FundPayoutHeld``) event
    carries on chain. ``payout_states`` says how each payout stands (none: not known).
    """
    states = payout_states or {}
    period = distribution.period
    document = {
        "period_id": period.period_id,
        "token": token,
        "starts_on": period.starts_on.isoformat(),
        "ends_on": period.ends_on.isoformat(),
        "received_wei": str(distribution.received_wei),
        "carry_in_wei": str(distribution.carry_in_wei),
        "distributable_wei": str(distribution.distributable_wei),
        "paid_wei": str(distribution.paid_wei),
        "carry_out_wei": str(distribution.carry_out_wei),
        "total_weight": distribution.total_weight,
        "remainder_rule": distribution.rule.value,
        "run_tag": payout_tag(period.period_id),
        "statements": [
            {
                "contributor": statement.contributor,
                "weight": statement.weight,
                "payout_wei": str(statement.payout_wei),
                "payout_batch_tag": batch_tags.get(statement.contributor),
                **_state_fields(states.get(statement.contributor)),
                "patents": [
                    {"patent_id": line.patent_id, "weight": line.weight, "counted": line.counted}
                    for line in statement.patents
                ],
            }
            for statement in distribution.statements
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=True) + "\n"


def statements_csv(
    distribution: Distribution,
    *,
    token: str,
    batch_tags: Mapping[str, str],
    payout_states: Mapping[str, PayoutState] | None = None,
) -> str:
    """One CSV row per contributor (RFC 4180, CRLF line ends); patent ids joined by ';'.

    ``token``, ``batch_tags`` and ``payout_states`` as for :func:`statements_json` (a
    contributor paid nothing has an empty ``payout_batch_tag`` and ``payout_status``)."""
    states = payout_states or {}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for statement in distribution.statements:
        writer.writerow(
            (
                statement.period_id,
                token,
                statement.contributor,
                statement.weight,
                statement.total_weight,
                statement.distributable_wei,
                statement.payout_wei,
                ";".join(line.patent_id for line in statement.patents if line.counted),
                ";".join(line.patent_id for line in statement.patents if not line.counted),
                batch_tags.get(statement.contributor, ""),
                state.status if (state := states.get(statement.contributor)) else "",
                state.held_wei if state else 0,
            )
        )
    return buffer.getvalue()


def _state_fields(state: PayoutState | None) -> dict[str, str | None]:
    """A statement's fields on how its payout stands: null status when it has none."""
    return {
        "payout_status": state.status if state else None,
        "payout_tx_hash": state.tx_hash if state else None,
        "held_wei": str(state.held_wei if state else 0),
        "claim_tx_hash": state.claim_tx_hash if state else None,
    }


def _address_order(address: str) -> int:
    return int(address, 16)


def _shares(
    distributable_wei: int,
    contributors: list[str],
    weights: dict[str, int],
    total_weight: int,
    rule: RemainderRule,
) -> dict[str, int]:
    if total_weight == 0:
        return dict.fromkeys(contributors, 0)
    amounts: dict[str, int] = {}
    remainders: dict[str, int] = {}
    for contributor in contributors:
        amounts[contributor], remainders[contributor] = divmod(
            distributable_wei * weights[contributor], total_weight
        )
    if rule is RemainderRule.LARGEST_REMAINDER:
        remainder_wei = distributable_wei - sum(amounts.values())
        # sorted() is stable and contributors are in address order, so ties go to the lower address.
        for contributor in sorted(contributors, key=lambda c: remainders[c], reverse=True)[:remainder_wei]:
            amounts[contributor] += 1
    return amounts
