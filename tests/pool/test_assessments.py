"""Expert assessments and the admission policy: exact means, majorities, and the refusals."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.pool.assessments import (
    AdmissionPolicy,
    Assessment,
    InvalidAssessment,
    decide_admission,
    format_fraction,
)

PATENT_ID = "EP3123456B1"


def assessed(*verdicts: tuple[int, bool]) -> list[Assessment]:
    return [
        Assessment(patent_id=PATENT_ID, expert=f"0xexpert{i}", score=score, core=core)
        for i, (score, core) in enumerate(verdicts)
    ]


POLICY = AdmissionPolicy(min_assessments=3, min_mean_score=60, require_core_majority=True)


@pytest.mark.parametrize(
    ("verdicts", "admitted", "score"),
    [
        # the mean exactly at the minimum is enough: 180 >= 60 * 3
        ([(60, True), (60, True), (60, False)], True, 60),
        # one point short over three experts: 179 < 180, although the mean rounds to 60
        ([(60, True), (60, True), (59, True)], False, 59),
        ([(100, True), (40, True), (41, True)], True, 60),  # 181/3 = 60 1/3
        ([(90, True), (90, True)], False, 90),  # too few assessments
        ([(90, True), (90, False), (90, False)], False, 90),  # 1 of 3 core
        ([(90, True), (90, True), (90, False), (90, False)], False, 90),  # 2 of 4: a tie is no majority
        ([(90, True), (90, True), (90, True), (90, False), (90, False)], True, 90),  # 3 of 5
        ([(0, True), (0, True), (0, True)], False, 0),
        ([(100, True), (100, True), (100, True)], True, 100),
    ],
)
def test_the_policy_decides(verdicts: list[tuple[int, bool]], admitted: bool, score: int) -> None:
    decision = decide_admission(PATENT_ID, assessed(*verdicts), POLICY)
    assert decision.admitted is admitted
    assert decision.score == score
    assert decision.assessment_count == len(verdicts)
    assert decision.mean_score == Fraction(sum(s for s, _ in verdicts), len(verdicts))
    assert len(decision.reasons) == 3


def test_the_reasons_say_why_criterion_by_criterion() -> None:
    decision = decide_admission(PATENT_ID, assessed((60, True), (61, False), (59, False)), POLICY)
    assert not decision.admitted
    assert decision.reasons == (
        "3 assessment(s) meets the minimum of 3",
        "mean score 60 reaches the minimum of 60",
        "1 of 3 expert(s) judge it core: no majority",
    )
    decision = decide_admission(PATENT_ID, assessed((60, True), (59, True)), POLICY)
    assert decision.reasons == (
        "2 assessment(s) is below the minimum of 3",
        "mean score 59 1/2 is below the minimum of 60",
        "2 of 2 expert(s) judge it core: a majority",
    )


def test_without_assessments_nothing_is_admitted() -> None:
    decision = decide_admission(PATENT_ID, [], AdmissionPolicy(min_assessments=1, min_mean_score=0))
    assert not decision.admitted
    assert decision.mean_score is None
    assert decision.score == 0
    assert decision.reasons[1] == "no scores, so no mean to compare with 0"


def test_the_core_majority_can_be_switched_off() -> None:
    policy = AdmissionPolicy(min_assessments=1, min_mean_score=50, require_core_majority=False)
    decision = decide_admission(PATENT_ID, assessed((50, False)), policy)
    assert decision.admitted
    assert len(decision.reasons) == 2


def test_an_expert_assesses_a_patent_once() -> None:
    twice = [*assessed((70, True)), Assessment(patent_id=PATENT_ID, expert="0xEXPERT0", score=10, core=False)]
    with pytest.raises(InvalidAssessment, match="expert '0xEXPERT0' assessed EP3123456B1 more than once"):
        decide_admission(PATENT_ID, twice, POLICY)


def test_the_contributor_cannot_assess_their_own_patent() -> None:
    with pytest.raises(InvalidAssessment, match="contributed EP3123456B1 and cannot assess it"):
        decide_admission(PATENT_ID, assessed((70, True), (80, True)), POLICY, contributor=" 0xEXPERT1 ")


def test_an_assessment_of_another_patent_is_refused() -> None:
    other = Assessment(patent_id="US10123456B2", expert="0xexpert9", score=70, core=True)
    with pytest.raises(InvalidAssessment, match="an assessment of US10123456B2 was given for EP3123456B1"):
        decide_admission(PATENT_ID, [*assessed((70, True)), other], POLICY)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"score": 101}, "a score is an integer from 0 to 100, not 101"),
        ({"score": -1}, "a score is an integer from 0 to 100, not -1"),
        ({"score": True}, "not True"),
        ({"score": 70.0}, "not 70.0"),
        ({"core": 1}, "'core' is true or false, not 1"),
        ({"patent_id": ""}, "an assessment names its patent"),
        ({"expert": "  "}, "an assessment names its expert"),
        ({"notes": "x" * 4001}, "assessment notes have at most 4000 characters"),
    ],
)
def test_an_invalid_assessment_is_refused(fields: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"patent_id": PATENT_ID, "expert": "0xexpert", "score": 70, "core": True}
    with pytest.raises(InvalidAssessment, match=message) as refused:
        Assessment(**{**arguments, **fields})  # type: ignore[arg-type]
    assert refused.value.status == 422


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_assessments": 0}, "min_assessments is an integer of at least 1, not 0"),
        ({"min_assessments": 2.0}, "not 2.0"),
        ({"min_mean_score": 101}, "min_mean_score is an integer from 0 to 100, not 101"),
        ({"min_mean_score": Fraction(121, 2)}, "not Fraction"),
    ],
)
def test_an_invalid_policy_is_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidAssessment, match=message):
        AdmissionPolicy(**fields)  # type: ignore[arg-type]


def test_the_policy_describes_itself_for_publication() -> None:
    assert POLICY.describe() == (
        "A patent enters the pool when at least 3 experts have assessed it, the mean of their scores "
        "(0 to 100) is at least 60 and more than half of them judge it core to the pool. "
        "The mean is computed exactly; the patent's admission score is that mean rounded down."
    )
    relaxed = AdmissionPolicy(min_assessments=1, min_mean_score=0, require_core_majority=False)
    assert relaxed.describe().startswith(
        "A patent enters the pool when at least 1 expert has assessed it and the mean of their scores "
        "(0 to 100) is at least 0. "
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [(Fraction(215, 3), "71 2/3"), (Fraction(60), "60"), (Fraction(1, 2), "0 1/2"), (Fraction(0), "0")],
)
def test_fractions_are_written_exactly(value: Fraction, text: str) -> None:
    assert format_fraction(value) == text


verdicts = st.lists(st.tuples(st.integers(0, 100), st.booleans()), max_size=12)
policies = st.builds(
    AdmissionPolicy,
    min_assessments=st.integers(1, 8),
    min_mean_score=st.integers(0, 100),
    require_core_majority=st.booleans(),
)


@given(verdicts, policies)
def test_the_decision_matches_the_policy_read_as_exact_arithmetic(
    drawn: list[tuple[int, bool]], policy: AdmissionPolicy
) -> None:
    decision = decide_admission(PATENT_ID, assessed(*drawn), policy)
    n = len(drawn)
    mean = Fraction(sum(score for score, _ in drawn), n) if n else None
    cores = sum(core for _, core in drawn)
    expected = (
        n >= policy.min_assessments
        and mean is not None
        and mean >= policy.min_mean_score
        and (not policy.require_core_majority or Fraction(cores, n) > Fraction(1, 2))
    )
    assert decision.admitted is expected
    assert decision.mean_score == mean
    assert decision.core_count == cores
    if mean is not None:
        assert decision.score <= mean < decision.score + 1
        assert 0 <= decision.score <= 100
