"""Royalty distribution: conservation to the wei, who counts in a period, ordering, and statements."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, date, datetime, timedelta

import pytest
from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st

from exchange.pool.assessments import AdmissionPolicy, Assessment, decide_admission
from exchange.pool.patent_numbers import parse_patent_number
from exchange.pool.patents import (
    FieldOfTechnology,
    Patent,
    PatentSource,
    RetirementReason,
    decide,
    propose,
    retire,
    start_assessment,
)
from exchange.pool.royalties import (
    CSV_COLUMNS,
    UINT256_MAX,
    Distribution,
    InvalidDistribution,
    Payout,
    PayoutState,
    RemainderRule,
    RoyaltyPeriod,
    RoyaltyStake,
    batch_payout_tag,
    distribute,
    payout_tag,
    stake_of,
    statements_csv,
    statements_json,
)

from .strategies import addresses

A = "0x1111111111111111111111111111111111111111"
B = "0x2222222222222222222222222222222222222222"
C = "0x3333333333333333333333333333333333333333"
HIGH = "0xaAaAaAaaAaAaAaaAaAAAAAAAAaaaAaAaAaaAaaAa"
Q1 = RoyaltyPeriod("2026-Q1", date(2026, 1, 1), date(2026, 3, 31))
JAN_1 = date(2026, 1, 1)


def stake(
    patent_id: str, contributor: str, weight: int, start: date = JAN_1, until: date | None = None
) -> RoyaltyStake:
    return RoyaltyStake(patent_id, contributor, weight, in_pool_from=start, in_pool_until=until)


EXAMPLE_STAKES = [
    stake("US10123456B2", A, 50),
    stake("EP3123456B1", A, 25),
    stake("CN107431123A", B, 75),
    stake("JP2017123456A", C, 60, until=date(2026, 3, 31)),  # left on the last day: does not count
]


def test_an_example_with_the_remainder_carried() -> None:
    result = distribute(Q1, received_wei=1000, carry_in_wei=1, stakes=EXAMPLE_STAKES)
    # D = 1001, W = 150: A and B have 75 each, 500.5 wei each before rounding
    assert result.total_weight == 150
    assert result.payouts == (Payout(A, 500, 75), Payout(B, 500, 75))
    assert result.carry_out_wei == 1
    assert result.distributable_wei == 1001 == result.paid_wei + result.carry_out_wei
    assert [s.contributor for s in result.statements] == [A, B, C]
    assert result.statements[2].payout_wei == 0
    assert result.statements[2].weight == 0


def test_an_example_with_the_largest_remainders_paid_ties_to_the_lower_address() -> None:
    result = distribute(
        Q1, received_wei=1000, carry_in_wei=1, stakes=EXAMPLE_STAKES, rule=RemainderRule.LARGEST_REMAINDER
    )
    assert result.payouts == (Payout(A, 501, 75), Payout(B, 500, 75))
    assert result.carry_out_wei == 0


def test_the_largest_fractional_part_wins_before_the_address() -> None:
    stakes = [stake("P1", HIGH, 2), stake("P2", A, 1)]  # 10 wei: HIGH 6.67, A 3.33
    result = distribute(
        Q1, received_wei=10, carry_in_wei=0, stakes=stakes, rule=RemainderRule.LARGEST_REMAINDER
    )
    assert result.payouts == (Payout(A, 3, 1), Payout(HIGH, 7, 2))


def test_addresses_order_as_numbers_whatever_their_checksum_case() -> None:
    stakes = [stake("P1", HIGH, 1), stake("P2", C.lower(), 1), stake("P3", A, 1)]
    result = distribute(Q1, received_wei=3, carry_in_wei=0, stakes=stakes)
    assert [p.contributor for p in result.payouts] == [A, C, HIGH]


def test_with_no_counting_patent_everything_carries() -> None:
    stakes = [stake("P1", A, 0), stake("P2", B, 80, until=date(2026, 2, 1))]
    result = distribute(Q1, received_wei=700, carry_in_wei=5, stakes=stakes)
    assert result.payouts == ()
    assert result.carry_out_wei == 705
    assert [s.payout_wei for s in result.statements] == [0, 0]
    assert distribute(Q1, received_wei=700, carry_in_wei=5, stakes=[]).carry_out_wei == 705


@pytest.mark.parametrize(
    ("in_pool_from", "in_pool_until", "counts"),
    [
        (date(2026, 3, 31), None, True),  # admitted on the last day: the whole period
        (date(2026, 4, 1), None, False),  # admitted after the period
        (date(2025, 1, 1), date(2026, 3, 31), False),  # left on the last day
        (date(2025, 1, 1), date(2026, 4, 1), True),  # left the day after
        (date(2025, 1, 1), date(2026, 1, 15), False),  # left during the period
        (date(2026, 3, 31), date(2026, 3, 31), False),  # in and out on the same day
    ],
)
def test_a_patent_counts_when_it_is_in_the_pool_on_the_last_day(
    in_pool_from: date, in_pool_until: date | None, counts: bool
) -> None:
    result = distribute(
        Q1,
        received_wei=100,
        carry_in_wei=0,
        stakes=[stake("P1", A, 10, in_pool_from, in_pool_until), stake("P2", B, 10)],
    )
    assert result.statements[0].patents[0].counted is counts
    assert result.statements[0].payout_wei == (50 if counts else 0)


def _proposed(source: PatentSource, *, expires_on: date, at: datetime) -> Patent:
    patent, _ = propose(
        parse_patent_number("EP 3 123 456 B1"),
        title="Threshold licensing",
        field=FieldOfTechnology.BLOCKCHAIN,
        source=source,
        contributor=A.lower() if source is PatentSource.CONTRIBUTED else None,
        expires_on=expires_on,
        actor="secretariat",
        at=at,
    )
    return patent


def _patent(*, expires_on: date, admitted_at: datetime) -> Patent:
    patent = _proposed(PatentSource.CONTRIBUTED, expires_on=expires_on, at=admitted_at)
    patent, _ = start_assessment(patent, actor="secretariat", at=admitted_at)
    assessments = [Assessment(patent.patent_id, "expert", 64, core=True)]
    decision = decide_admission(patent.patent_id, assessments, AdmissionPolicy(1, 60, False))
    return decide(patent, decision, actor="council", at=admitted_at)[0]


def test_a_patent_stakes_its_admission_score_from_its_admission_day() -> None:
    patent = _patent(expires_on=date(2030, 6, 1), admitted_at=datetime(2026, 2, 10, tzinfo=UTC))
    assert stake_of(patent) == RoyaltyStake(
        patent_id="EP3123456B1",
        contributor=A,
        weight=64,
        in_pool_from=date(2026, 2, 10),
        in_pool_until=date(2030, 6, 1),  # an unswept lapse still ends the stake
    )
    retired, _ = retire(
        patent, RetirementReason.NON_CORE, actor="committee", at=datetime(2027, 1, 2, tzinfo=UTC)
    )
    assert stake_of(retired).in_pool_until == date(2027, 1, 2)


def test_an_expired_patent_not_yet_swept_earns_nothing() -> None:
    patent = _patent(expires_on=date(2026, 3, 1), admitted_at=datetime(2026, 1, 10, tzinfo=UTC))
    result = distribute(Q1, received_wei=100, carry_in_wei=0, stakes=[stake_of(patent), stake("P2", B, 1)])
    assert result.payouts == (Payout(B, 100, 1),)


def test_only_admitted_contributed_patents_have_stakes() -> None:
    day = datetime(2026, 1, 1, tzinfo=UTC)
    purchased = _proposed(PatentSource.PURCHASED, expires_on=date(2030, 1, 1), at=day)
    with pytest.raises(InvalidDistribution, match="was not contributed and earns no royalties"):
        stake_of(purchased)
    proposed = _proposed(PatentSource.CONTRIBUTED, expires_on=date(2030, 1, 1), at=day)
    with pytest.raises(InvalidDistribution, match="was never admitted to the pool"):
        stake_of(proposed)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"received_wei": -1}, "received_wei is a non-negative integer, not -1"),
        ({"carry_in_wei": 1.5}, "carry_in_wei is a non-negative integer, not 1.5"),
        ({"received_wei": True}, "not True"),
        ({"received_wei": UINT256_MAX, "carry_in_wei": 1}, "does not fit a uint256"),
        ({"stakes": [stake("P1", A, 1), stake("P1", B, 1)]}, "patent P1 has two stakes"),
    ],
)
def test_invalid_inputs_are_refused(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"received_wei": 1, "carry_in_wei": 0, "stakes": [], **kwargs}
    with pytest.raises(InvalidDistribution, match=message):
        distribute(Q1, **arguments)  # type: ignore[arg-type]


def test_invalid_stakes_and_periods_are_refused() -> None:
    with pytest.raises(InvalidDistribution, match="a weight is a non-negative integer, not -1"):
        stake("P1", A, -1)
    with pytest.raises(InvalidDistribution, match="leaves the pool before it enters"):
        stake("P1", A, 1, date(2026, 2, 2), date(2026, 2, 1))
    with pytest.raises(InvalidDistribution, match="a stake names its patent"):
        stake("", A, 1)
    with pytest.raises(InvalidDistribution, match="is not an address"):
        stake("P1", "0xabc", 1)
    with pytest.raises(InvalidDistribution, match="ends before it starts"):
        RoyaltyPeriod("2026-Q1", date(2026, 4, 1), date(2026, 3, 31))
    with pytest.raises(InvalidDistribution, match="a period id is 1 to 64 letters"):
        RoyaltyPeriod("2026 Q1", date(2026, 1, 1), date(2026, 3, 31))


def test_the_payout_tag_is_keccak_of_the_period_id() -> None:
    assert payout_tag("2026-Q1") == "0x" + keccak(b"royalty-period\x1f2026-Q1").hex()
    assert payout_tag("2026-Q1") != payout_tag("2026-Q2")
    with pytest.raises(InvalidDistribution):
        payout_tag("2026/Q1")


def test_a_batch_tag_is_keccak_of_the_run_tag_token_and_index_packed() -> None:
    run_tag = payout_tag("2026-Q1")
    # keccak256(abi.encodePacked(bytes32 runTag, address token, uint256 batchIndex))
    packed = bytes.fromhex(run_tag[2:]) + bytes.fromhex(A[2:]) + (7).to_bytes(32, "big")
    assert batch_payout_tag(run_tag, A, 7) == "0x" + keccak(packed).hex()
    # Unique per batch, per token and per period; the token's spelling does not matter.
    tags = {
        batch_payout_tag(tag, token, index)
        for tag in (run_tag, payout_tag("2026-Q2"))
        for token in (A, B)
        for index in range(3)
    }
    assert len(tags) == 12
    assert run_tag not in tags
    assert batch_payout_tag(run_tag, A.lower(), 0) == batch_payout_tag(run_tag, A, 0)
    for bad in (("2026-Q1", A, 0), (run_tag, "0xabc", 0), (run_tag, A, -1), (run_tag, A, 2**256)):
        with pytest.raises(InvalidDistribution):
            batch_payout_tag(*bad)


TOKEN = "0x00000000000000000000000000000000000000B1"
TAG_A, TAG_B = "0x" + "a1" * 32, "0x" + "b2" * 32


TX_A, TX_B, CLAIM_B = "0x" + "c1" * 32, "0x" + "c2" * 32, "0x" + "c3" * 32
# A was paid; the token refused B's payout, which the Fund holds for B.
STATES = {A: PayoutState("paid", tx_hash=TX_A), B: PayoutState("held", held_wei=500, tx_hash=TX_B)}


def test_the_statements_as_csv() -> None:
    result = distribute(Q1, received_wei=1000, carry_in_wei=1, stakes=EXAMPLE_STAKES)
    text = statements_csv(result, token=TOKEN, batch_tags={A: TAG_A, B: TAG_B}, payout_states=STATES)
    assert text == (
        "period_id,token,contributor,weight,total_weight,distributable_wei,payout_wei,counted_patents,"
        "uncounted_patents,payout_batch_tag,payout_status,held_wei\r\n"
        f"2026-Q1,{TOKEN},{A},75,150,1001,500,EP3123456B1;US10123456B2,,{TAG_A},paid,0\r\n"
        f"2026-Q1,{TOKEN},{B},75,150,1001,500,CN107431123A,,{TAG_B},held,500\r\n"
        f"2026-Q1,{TOKEN},{C},0,150,1001,0,,JP2017123456A,,,0\r\n"
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS


def test_the_statements_as_json() -> None:
    result = distribute(Q1, received_wei=1000, carry_in_wei=1, stakes=EXAMPLE_STAKES)
    claimed = {**STATES, B: PayoutState("claimed", tx_hash=TX_B, claim_tx_hash=CLAIM_B)}
    document = json.loads(
        statements_json(result, token=TOKEN, batch_tags={A: TAG_A, B: TAG_B}, payout_states=claimed)
    )
    assert document == {
        "period_id": "2026-Q1",
        "token": TOKEN,
        "starts_on": "2026-01-01",
        "ends_on": "2026-03-31",
        "received_wei": "1000",
        "carry_in_wei": "1",
        "distributable_wei": "1001",
        "paid_wei": "1000",
        "carry_out_wei": "1",
        "total_weight": 150,
        "remainder_rule": "carry",
        "run_tag": payout_tag("2026-Q1"),
        "statements": [
            {
                "contributor": A,
                "weight": 75,
                "payout_wei": "500",
                "payout_batch_tag": TAG_A,
                "payout_status": "paid",
                "payout_tx_hash": TX_A,
                "held_wei": "0",
                "claim_tx_hash": None,
                "patents": [
                    {"patent_id": "EP3123456B1", "weight": 25, "counted": True},
                    {"patent_id": "US10123456B2", "weight": 50, "counted": True},
                ],
            },
            {
                "contributor": B,
                "weight": 75,
                "payout_wei": "500",
                "payout_batch_tag": TAG_B,
                "payout_status": "claimed",
                "payout_tx_hash": TX_B,
                "held_wei": "0",
                "claim_tx_hash": CLAIM_B,
                "patents": [{"patent_id": "CN107431123A", "weight": 75, "counted": True}],
            },
            {
                "contributor": C,
                "weight": 0,
                "payout_wei": "0",
                "payout_batch_tag": None,
                "payout_status": None,
                "payout_tx_hash": None,
                "held_wei": "0",
                "claim_tx_hash": None,
                "patents": [{"patent_id": "JP2017123456A", "weight": 60, "counted": False}],
            },
        ],
    }


def test_huge_amounts_stay_exact_in_json() -> None:
    result = distribute(Q1, received_wei=UINT256_MAX, carry_in_wei=0, stakes=[stake("P1", A, 3)])
    assert json.loads(statements_json(result, token=TOKEN, batch_tags={}))["statements"][0][
        "payout_wei"
    ] == str(UINT256_MAX)


# --- properties ---------------------------------------------------------------------------------

days = st.integers(-400, 400).map(lambda n: date(2026, 3, 31) + timedelta(days=n))


@st.composite
def stake_lists(draw: st.DrawFn) -> list[RoyaltyStake]:
    count = draw(st.integers(0, 25))
    stakes = []
    for index in range(count):
        start = draw(days)
        offset = draw(st.none() | st.integers(0, 400))
        until = None if offset is None else start + timedelta(days=offset)
        weight = draw(st.sampled_from([0, 0, 1, 100]) | st.integers(0, 100) | st.integers(0, 10**6))
        stakes.append(stake(f"P{index}", draw(addresses()), weight, start, until))
    return stakes


amounts = st.integers(0, 10**6) | st.integers(0, 10**30) | st.integers(0, UINT256_MAX // 2)
rules = st.sampled_from(list(RemainderRule))


def _exact_check(result: Distribution) -> None:
    distributable = result.received_wei + result.carry_in_wei
    assert sum(p.amount_wei for p in result.payouts) + result.carry_out_wei == distributable
    assert result.carry_out_wei >= 0
    weights = {s.contributor: s.weight for s in result.statements}
    assert sum(weights.values()) == result.total_weight
    for payout in result.payouts:
        assert payout.amount_wei > 0
        assert weights[payout.contributor] == payout.weight > 0
        # within 1 wei of the exact share D * w / W
        error = payout.amount_wei * result.total_weight - distributable * payout.weight
        assert -result.total_weight < error < result.total_weight
    paid = {p.contributor for p in result.payouts}
    for statement in result.statements:
        if statement.contributor not in paid:
            assert statement.payout_wei == 0
            # unpaid with a weight only when the share is below 1 wei
            assert distributable * statement.weight < result.total_weight or statement.weight == 0
    order = [int(s.contributor, 16) for s in result.statements]
    assert order == sorted(order)
    assert len(set(order)) == len(order)


@given(stake_lists(), amounts, amounts, rules)
def test_distributions_conserve_the_amount_exactly_and_stay_within_1_wei(
    stakes: list[RoyaltyStake], received_wei: int, carry_in_wei: int, rule: RemainderRule
) -> None:
    result = distribute(Q1, received_wei=received_wei, carry_in_wei=carry_in_wei, stakes=stakes, rule=rule)
    _exact_check(result)
    counting = [s for s in stakes if s.counts_on(Q1.ends_on)]
    assert result.total_weight == sum(s.weight for s in counting)
    zero_weight = {s.contributor for s in stakes} - {s.contributor for s in counting if s.weight > 0}
    assert not zero_weight & {p.contributor for p in result.payouts}
    paid_contributors = len({s.contributor for s in counting if s.weight > 0})
    if result.total_weight == 0:
        assert result.carry_out_wei == received_wei + carry_in_wei
    elif rule is RemainderRule.LARGEST_REMAINDER:
        assert result.carry_out_wei == 0
    else:
        assert result.carry_out_wei < paid_contributors


@given(stake_lists(), amounts, rules, st.randoms(use_true_random=False))
def test_the_order_of_the_stakes_does_not_matter(
    stakes: list[RoyaltyStake], received_wei: int, rule: RemainderRule, shuffler: random.Random
) -> None:
    shuffled = list(stakes)
    shuffler.shuffle(shuffled)
    first = distribute(Q1, received_wei=received_wei, carry_in_wei=0, stakes=stakes, rule=rule)
    second = distribute(Q1, received_wei=received_wei, carry_in_wei=0, stakes=shuffled, rule=rule)
    assert first == second
    assert statements_json(first, token=TOKEN, batch_tags={}) == statements_json(
        second, token=TOKEN, batch_tags={}
    )
    assert statements_csv(first, token=TOKEN, batch_tags={}) == statements_csv(
        second, token=TOKEN, batch_tags={}
    )


# Six periods' receipts, all of which may carry: together they fit a uint256, as the Fund's balance does.
period_receipts = st.integers(0, 10**6) | st.integers(0, 10**30) | st.integers(0, UINT256_MAX // 6)


@given(stake_lists(), st.lists(period_receipts, min_size=1, max_size=6))
def test_carrying_across_periods_loses_nothing(stakes: list[RoyaltyStake], receipts: list[int]) -> None:
    carry_wei = paid_wei = 0
    for received_wei in receipts:
        result = distribute(Q1, received_wei=received_wei, carry_in_wei=carry_wei, stakes=stakes)
        paid_wei += result.paid_wei
        carry_wei = result.carry_out_wei
    assert paid_wei + carry_wei == sum(receipts)


def test_a_held_payout_is_stated_with_what_the_fund_holds() -> None:
    result = distribute(Q1, received_wei=1000, carry_in_wei=1, stakes=EXAMPLE_STAKES)
    document = json.loads(
        statements_json(result, token=TOKEN, batch_tags={A: TAG_A, B: TAG_B}, payout_states=STATES)
    )
    by_contributor = {s["contributor"]: s for s in document["statements"]}
    assert (by_contributor[B]["payout_status"], by_contributor[B]["held_wei"]) == ("held", "500")
    assert by_contributor[B]["payout_wei"] == "500"  # held, it was paid out of the distribution all the same
    assert document["paid_wei"] == "1000"
