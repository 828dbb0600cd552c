"""The BPC mint policy for contributed patents: amounts, who is owed, and the exactly-once key."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st

from exchange.pool.assessments import AdmissionPolicy, Assessment, decide_admission
from exchange.pool.contributions import (
    UINT256_MAX,
    InvalidMintPolicy,
    MintInstruction,
    MintPolicy,
    NotMintable,
    format_bpc,
    mint_for_admission,
    mint_idempotency_key,
)
from exchange.pool.patent_numbers import parse_patent_number
from exchange.pool.patents import (
    FieldOfTechnology,
    Patent,
    PatentSource,
    PatentStatus,
    RetirementReason,
    decide,
    propose,
    retire,
    start_assessment,
)

ONE_BPC = 10**18
POLICY = MintPolicy(version="2026-01", base_amount_wei=1_000 * ONE_BPC)
MEMBER = "0x52908400098527886E0F7030069857D2E4169EE7"
AT = datetime(2026, 3, 1, tzinfo=UTC)


def admitted(scores: list[int], source: PatentSource = PatentSource.CONTRIBUTED) -> Patent:
    number = parse_patent_number("CN107431123A")
    patent, _ = propose(
        number,
        title="Sharding ledger",
        field=FieldOfTechnology.BIG_DATA,
        source=source,
        contributor=MEMBER if source is PatentSource.CONTRIBUTED else None,
        expires_on=date(2036, 1, 1),
        actor="secretariat",
        at=AT,
    )
    patent, _ = start_assessment(patent, actor="secretariat", at=AT)
    assessments = [Assessment(patent.patent_id, f"expert-{i}", s, core=True) for i, s in enumerate(scores)]
    decision = decide_admission(patent.patent_id, assessments, AdmissionPolicy(1, 0, False))
    patent, _ = decide(patent, decision, actor="council", at=AT)
    return patent


@pytest.mark.parametrize(
    ("score", "amount_wei"),
    [(100, 1_000 * ONE_BPC), (75, 750 * ONE_BPC), (1, 10 * ONE_BPC), (0, 0)],
)
def test_the_amount_is_the_base_times_the_score_over_100(score: int, amount_wei: int) -> None:
    assert POLICY.amount_wei(score) == amount_wei


def test_the_amount_rounds_down() -> None:
    policy = MintPolicy(version="v1", base_amount_wei=199)
    assert policy.amount_wei(50) == 99  # 99.5
    assert policy.amount_wei(1) == 1  # 1.99
    assert MintPolicy(version="v1", base_amount_wei=99).amount_wei(1) == 0  # 0.99


@given(st.integers(1, UINT256_MAX), st.integers(0, 100))
def test_the_amount_is_the_exact_floor_and_never_exceeds_the_base(base_amount_wei: int, score: int) -> None:
    amount_wei = MintPolicy(version="v1", base_amount_wei=base_amount_wei).amount_wei(score)
    assert amount_wei * 100 <= base_amount_wei * score < (amount_wei + 1) * 100
    assert 0 <= amount_wei <= base_amount_wei <= UINT256_MAX


def test_an_admitted_contributed_patent_is_owed_a_mint() -> None:
    patent = admitted([80, 71])  # score floor(151 / 2) = 75
    instruction = mint_for_admission(patent, POLICY)
    assert instruction == MintInstruction(
        patent_id="CN107431123A",
        recipient=MEMBER,
        amount_wei=750 * ONE_BPC,
        score=75,
        policy_version="2026-01",
        idempotency_key=mint_idempotency_key("CN107431123A", "2026-01"),
    )


@pytest.mark.parametrize("source", [PatentSource.PURCHASED, PatentSource.FILED])
def test_patents_the_foundation_bought_or_filed_mint_nothing(source: PatentSource) -> None:
    assert mint_for_admission(admitted([90], source), POLICY) is None


def test_a_zero_amount_mints_nothing() -> None:
    assert mint_for_admission(admitted([0]), POLICY) is None


def test_only_a_patent_in_the_pool_is_minted() -> None:
    patent = admitted([90])
    retired, _ = retire(patent, RetirementReason.TRANSFERRED_OUT, actor="council", at=AT)
    with pytest.raises(NotMintable, match="patent CN107431123A is retired, not in the pool"):
        mint_for_admission(retired, POLICY)
    with pytest.raises(NotMintable, match="is proposed"):
        mint_for_admission(
            replace(patent, status=PatentStatus.PROPOSED, score=None, in_pool_since=None), POLICY
        )


def test_the_idempotency_key_is_keccak_of_the_documented_preimage() -> None:
    key = mint_idempotency_key("CN107431123A", "2026-01")
    assert key == "0x" + keccak(b"bpc-mint\x1fCN107431123A\x1f2026-01").hex()
    assert len(key) == 66
    assert key.startswith("0x")


def test_the_idempotency_key_is_stable_and_separates_patents_and_versions() -> None:
    key = mint_idempotency_key("CN107431123A", "2026-01")
    assert mint_idempotency_key("CN107431123A", "2026-01") == key  # a retry finds the same mint
    assert mint_idempotency_key("CN107431124A", "2026-01") != key
    assert mint_idempotency_key("CN107431123A", "2026-02") != key
    # the separator keeps the fields apart: no id/version split can collide
    assert mint_idempotency_key("US1B1", "2026") != mint_idempotency_key("US1B", "12026")


@pytest.mark.parametrize(
    ("patent_id", "version"),
    [("", "v1"), ("CN 107431123A", "v1"), ("CN107431123A\x1f", "v1"), ("CN107431123A", ""), ("CN1A", "v 1")],
)
def test_the_idempotency_key_refuses_ambiguous_fields(patent_id: str, version: str) -> None:
    with pytest.raises(InvalidMintPolicy):
        mint_idempotency_key(patent_id, version)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"version": ""}, "a policy version is 1 to 64 letters"),
        ({"version": "v 1"}, "a policy version is 1 to 64 letters"),
        ({"version": "-v1"}, "a policy version is 1 to 64 letters"),
        ({"version": "v" * 65}, "a policy version is 1 to 64 letters"),
        ({"base_amount_wei": 0}, "base_amount_wei is a positive integer that fits a uint256, not 0"),
        ({"base_amount_wei": -1}, "not -1"),
        ({"base_amount_wei": UINT256_MAX + 1}, "fits a uint256"),
        ({"base_amount_wei": 1.5}, "not 1.5"),
        ({"base_amount_wei": True}, "not True"),
    ],
)
def test_an_invalid_policy_is_refused(fields: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"version": "v1", "base_amount_wei": ONE_BPC, **fields}
    with pytest.raises(InvalidMintPolicy, match=message):
        MintPolicy(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("score", [-1, 101, True, 50.0])
def test_a_score_outside_0_to_100_is_refused(score: object) -> None:
    with pytest.raises(InvalidMintPolicy, match="a score is an integer from 0 to 100"):
        POLICY.amount_wei(score)  # type: ignore[arg-type]


def test_the_policy_describes_itself_for_publication() -> None:
    text = MintPolicy(version="2026-01", base_amount_wei=1_500 * ONE_BPC + 1).describe()
    assert text.startswith(
        "BPC mint policy 2026-01. When a patent contributed by an active member enters the pool, the member "
        "receives floor(1500000000000000000001 x score / 100) BPC base units (1 BPC = 10^18 base units)"
    )
    assert "A score of 100 mints 1500.000000000000000001 BPC; a score of 50 mints 750 BPC." in text
    assert "Patents the foundation buys or files itself mint nothing." in text
    assert (
        "Only an active member contributes a patent, and it is admitted only while its contributor "
        "still is one: a suspended contributor's patent waits for its reinstatement, an expelled "
        "contributor's (or one on no register) is rejected." in text
    )


@pytest.mark.parametrize(
    ("amount_wei", "text"),
    [
        (0, "0"),
        (1, "0.000000000000000001"),
        (ONE_BPC, "1"),
        (1_500_000_000_000_000_000, "1.5"),
        (10 * ONE_BPC, "10"),
    ],
)
def test_base_units_are_written_as_exact_bpc(amount_wei: int, text: str) -> None:
    assert format_bpc(amount_wei) == text
