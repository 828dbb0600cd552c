"""The patent lifecycle: every legal move, every illegal one, expiry, and the records it keeps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.kit.errors import Conflict, ValidationFailed
from exchange.pool.assessments import AdmissionDecision, AdmissionPolicy, Assessment, decide_admission
from exchange.pool.patent_numbers import parse_patent_number
from exchange.pool.patents import (
    TRANSITIONS,
    FieldOfTechnology,
    IllegalTransition,
    InvalidPatentRecord,
    Patent,
    PatentAction,
    PatentEvent,
    PatentSource,
    PatentStatus,
    RetirementReason,
    contributor_address,
    decide,
    due_for_expiry,
    propose,
    retire,
    start_assessment,
)
from tests.support.addresses import mistyped

NUMBER = parse_patent_number("US 10,123,456 B2")
PATENT_ID = "US10123456B2"
MEMBER = "0x52908400098527886e0f7030069857d2e4169ee7"
MEMBER_CHECKSUMMED = "0x52908400098527886E0F7030069857D2E4169EE7"
EXPIRES_ON = date(2036, 5, 1)
T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
POLICY = AdmissionPolicy(min_assessments=2, min_mean_score=60, require_core_majority=True)


def at(days: int) -> datetime:
    return T0 + timedelta(days=days)


def decision(scores: list[int], *, patent_id: str = PATENT_ID, core: bool = True) -> AdmissionDecision:
    assessments = [
        Assessment(patent_id=patent_id, expert=f"expert-{i}", score=s, core=core)
        for i, s in enumerate(scores)
    ]
    return decide_admission(patent_id, assessments, POLICY)


def proposed(source: PatentSource = PatentSource.CONTRIBUTED) -> Patent:
    patent, _ = propose(
        NUMBER,
        title="  Consensus by proof of patent  ",
        field=FieldOfTechnology.BLOCKCHAIN,
        source=source,
        contributor=MEMBER if source is PatentSource.CONTRIBUTED else None,
        expires_on=EXPIRES_ON,
        actor="secretariat",
        at=T0,
    )
    return patent


def in_pool() -> Patent:
    patent, _ = start_assessment(proposed(), actor="secretariat", at=at(1))
    patent, _ = decide(patent, decision([70, 81]), actor="council", at=at(30))
    return patent


def test_propose_creates_a_proposed_patent_and_its_event() -> None:
    patent, event = propose(
        NUMBER,
        title="  Consensus by proof of patent  ",
        field=FieldOfTechnology.AI,
        source=PatentSource.CONTRIBUTED,
        contributor=MEMBER,
        expires_on=EXPIRES_ON,
        actor="  secretariat ",
        at=T0,
    )
    assert patent == Patent(
        number=NUMBER,
        title="Consensus by proof of patent",
        field=FieldOfTechnology.AI,
        source=PatentSource.CONTRIBUTED,
        contributor=MEMBER_CHECKSUMMED,
        expires_on=EXPIRES_ON,
        status=PatentStatus.PROPOSED,
        version=1,
    )
    assert patent.patent_id == PATENT_ID
    assert event == PatentEvent(
        patent_id=PATENT_ID,
        action=PatentAction.PROPOSED,
        from_status=None,
        to_status=PatentStatus.PROPOSED,
        reason="contributed patent proposed",
        actor="secretariat",
        at=T0,
        version=1,
    )


def test_the_whole_life_of_a_contributed_patent() -> None:
    patent = proposed()
    patent, started = start_assessment(patent, actor="secretariat", at=at(1))
    assert (started.from_status, started.to_status, started.action) == (
        PatentStatus.PROPOSED,
        PatentStatus.UNDER_ASSESSMENT,
        PatentAction.ASSESSMENT_STARTED,
    )
    patent, admitted = decide(patent, decision([70, 81]), actor="council", at=at(30))
    assert patent.status is PatentStatus.IN_POOL
    assert patent.score == 75  # floor(151 / 2)
    assert patent.in_pool_since == date(2026, 2, 4)
    assert admitted.action is PatentAction.ADMITTED
    assert admitted.reason == (
        "2 assessment(s) meets the minimum of 2; mean score 75 1/2 reaches the minimum of 60; "
        "2 of 2 expert(s) judge it core: a majority"
    )
    patent, retired = retire(
        patent, RetirementReason.NON_CORE, actor="expert committee", at=at(400), note=" superseded by X "
    )
    assert patent.status is PatentStatus.RETIRED
    assert patent.retirement_reason is RetirementReason.NON_CORE
    assert patent.left_pool_on == at(400).date()
    assert patent.score == 75  # kept: royalties for earlier periods still need it
    assert retired.reason == "non_core: superseded by X"
    assert retired.actor == "expert committee"
    assert [started.version, admitted.version, retired.version] == [2, 3, 4]
    assert patent.version == 4


def test_a_failed_assessment_rejects_the_patent_with_the_reasons() -> None:
    patent, _ = start_assessment(proposed(), actor="secretariat", at=at(1))
    patent, event = decide(patent, decision([59, 60]), actor="council", at=at(30))
    assert patent.status is PatentStatus.REJECTED
    assert patent.score is None
    assert patent.in_pool_since is None
    assert event.action is PatentAction.REJECTED
    assert "mean score 59 1/2 is below the minimum of 60" in event.reason


def test_a_patent_that_lapsed_during_assessment_is_rejected_not_admitted() -> None:
    patent, _ = start_assessment(proposed(), actor="secretariat", at=at(1))
    lapse_day = datetime(2036, 5, 1, tzinfo=UTC)
    patent, event = decide(patent, decision([90, 90]), actor="council", at=lapse_day)
    assert patent.status is PatentStatus.REJECTED
    assert event.reason.startswith("lapsed on 2036-05-01 during its assessment; ")


def test_a_patent_whose_contributor_was_expelled_is_rejected_not_admitted() -> None:
    patent, _ = start_assessment(proposed(), actor="secretariat", at=at(1))
    expelled = f"its contributor {MEMBER_CHECKSUMMED} was expelled from the pool"
    rejected, event = decide(
        patent, decision([90, 90]), actor="council", at=at(30), contributor_excluded=expelled
    )
    assert (rejected.status, rejected.score, rejected.in_pool_since) == (PatentStatus.REJECTED, None, None)
    assert event.action is PatentAction.REJECTED
    assert event.reason.startswith(f"{expelled}; ")
    # A decision the policy refuses anyway says only that.
    refused, event = decide(
        patent, decision([50, 50]), actor="council", at=at(30), contributor_excluded=expelled
    )
    assert refused.status is PatentStatus.REJECTED
    assert "expelled" not in event.reason


def test_a_decision_about_another_patent_is_refused() -> None:
    patent, _ = start_assessment(proposed(), actor="secretariat", at=at(1))
    with pytest.raises(InvalidPatentRecord, match="the decision is about EP3123456B1"):
        decide(patent, decision([90, 90], patent_id="EP3123456B1"), actor="council", at=at(2))


def _moves() -> dict[str, Callable[[Patent], tuple[Patent, PatentEvent]]]:
    return {
        "start_assessment": lambda p: start_assessment(p, actor="a", at=at(2)),
        "decide": lambda p: decide(p, decision([90, 90]), actor="a", at=at(2)),
        "retire": lambda p: retire(p, RetirementReason.TRANSFERRED_OUT, actor="a", at=at(2)),
    }


def _patent_in(status: PatentStatus) -> Patent:
    patent = proposed()
    if status is PatentStatus.PROPOSED:
        return patent
    patent, _ = start_assessment(patent, actor="a", at=at(1))
    if status is PatentStatus.UNDER_ASSESSMENT:
        return patent
    if status is PatentStatus.REJECTED:
        return decide(patent, decision([0, 0]), actor="a", at=at(1))[0]
    patent, _ = decide(patent, decision([90, 90]), actor="a", at=at(1))
    if status is PatentStatus.IN_POOL:
        return patent
    return retire(patent, RetirementReason.NON_CORE, actor="a", at=at(1))[0]


LEGAL = {
    (PatentStatus.PROPOSED, "start_assessment"),
    (PatentStatus.UNDER_ASSESSMENT, "decide"),
    (PatentStatus.IN_POOL, "retire"),
}


@pytest.mark.parametrize("status", list(PatentStatus))
@pytest.mark.parametrize("move", ["start_assessment", "decide", "retire"])
def test_every_move_is_allowed_from_exactly_one_status(status: PatentStatus, move: str) -> None:
    patent = _patent_in(status)
    assert patent.status is status
    if (status, move) in LEGAL:
        moved, event = _moves()[move](patent)
        assert moved.status in TRANSITIONS[status]
        assert (event.from_status, event.to_status) == (status, moved.status)
        return
    with pytest.raises(IllegalTransition) as refused:
        _moves()[move](patent)
    error = refused.value
    assert isinstance(error, Conflict)
    assert error.status == 409
    assert error.patent_status is status
    assert error.action == move
    assert error.detail.startswith(f"patent {PATENT_ID} is {status.value}: '{move}' needs ")
    assert error.extra == {"patent_id": PATENT_ID, "patent_status": status.value, "action": move}


def test_the_final_statuses_have_no_way_out() -> None:
    assert TRANSITIONS[PatentStatus.RETIRED] == frozenset()
    assert TRANSITIONS[PatentStatus.REJECTED] == frozenset()


@given(st.lists(st.sampled_from(["start_assessment", "decide", "retire"]), max_size=8))
def test_any_sequence_of_moves_follows_the_transition_table(moves: list[str]) -> None:
    patent = proposed()
    for move in moves:
        before = patent
        try:
            patent, event = _moves()[move](patent)
        except IllegalTransition:
            assert patent is before
            continue
        assert patent.status in TRANSITIONS[before.status]
        assert patent.version == before.version + 1 == event.version
        assert patent.number == before.number
        assert patent.contributor == before.contributor


def test_retiring_as_expired_needs_the_patent_to_have_lapsed() -> None:
    patent = in_pool()
    the_day_before = datetime(2036, 4, 30, 23, 59, tzinfo=UTC)
    with pytest.raises(IllegalTransition, match="in force until 2036-05-01 and cannot be retired as expired"):
        retire(patent, RetirementReason.EXPIRED, actor="sweep", at=the_day_before)


def test_an_expiry_sweep_that_runs_late_records_the_lapse_day() -> None:
    patent = in_pool()
    late = datetime(2036, 7, 9, 3, 0, tzinfo=UTC)
    retired, event = retire(patent, RetirementReason.EXPIRED, actor="sweep", at=late)
    assert retired.left_pool_on == EXPIRES_ON
    assert event.reason == "expired"
    assert event.at == late


def test_due_for_expiry_from_the_lapse_day_on_and_only_in_the_pool() -> None:
    patent = in_pool()
    assert not due_for_expiry(patent, date(2036, 4, 30))
    assert due_for_expiry(patent, date(2036, 5, 1))
    assert due_for_expiry(patent, date(2040, 1, 1))
    assert not due_for_expiry(proposed(), date(2040, 1, 1))
    retired, _ = retire(patent, RetirementReason.EXPIRED, actor="sweep", at=datetime(2036, 5, 1, tzinfo=UTC))
    assert not due_for_expiry(retired, date(2040, 1, 1))


def test_today_is_the_utc_date_of_the_instant() -> None:
    patent = in_pool()
    # 2036-04-30 23:30 at UTC-2 is already 2036-05-01 in UTC: the patent has lapsed.
    evening = datetime(2036, 4, 30, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    retired, _ = retire(patent, RetirementReason.EXPIRED, actor="sweep", at=evening)
    assert retired.left_pool_on == EXPIRES_ON


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"title": "   "}, "a patent title has 1 to 500 characters"),
        ({"title": "x" * 501}, "a patent title has 1 to 500 characters"),
        ({"contributor": None}, "a contributed patent names its contributor"),
        ({"contributor": "0x1234"}, "'0x1234' is not an address"),
        ({"contributor": "52908400098527886e0f7030069857d2e4169ee7"}, "is not an address"),
        ({"contributor": "0x" + "0" * 40}, "the contributor is the zero address"),
        ({"source": PatentSource.PURCHASED}, "a purchased patent has no contributor"),
        ({"source": PatentSource.FILED}, "a filed patent has no contributor"),
        ({"expires_on": date(2026, 1, 5)}, "lapsed on 2026-01-05; it cannot be proposed"),
        ({"actor": " "}, "every move names its actor"),
        ({"at": datetime(2026, 1, 5, 9, 30)}, "'at' must be a timezone-aware instant"),  # noqa: DTZ001 - the point
    ],
)
def test_propose_refuses_bad_records(changes: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "title": "Consensus by proof of patent",
        "field": FieldOfTechnology.QUANTUM,
        "source": PatentSource.CONTRIBUTED,
        "contributor": MEMBER,
        "expires_on": EXPIRES_ON,
        "actor": "secretariat",
        "at": T0,
        **changes,
    }
    with pytest.raises(InvalidPatentRecord, match=message) as refused:
        propose(NUMBER, **arguments)  # type: ignore[arg-type]
    assert isinstance(refused.value, ValidationFailed)
    assert refused.value.status == 422


def test_purchased_and_filed_patents_have_no_contributor() -> None:
    assert proposed(PatentSource.PURCHASED).contributor is None
    assert proposed(PatentSource.FILED).contributor is None


def test_a_retirement_note_has_a_limit() -> None:
    with pytest.raises(InvalidPatentRecord, match="at most 2000 characters"):
        retire(in_pool(), RetirementReason.NON_CORE, actor="a", at=at(60), note="x" * 2001)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"contributor": None}, "exactly the contributed patents name a contributor"),
        ({"status": PatentStatus.IN_POOL}, "exactly the admitted patents carry a score and in_pool_since"),
        ({"score": 50}, "exactly the admitted patents carry a score and in_pool_since"),
        ({"status": PatentStatus.RETIRED}, "exactly the admitted patents"),
        ({"version": 0}, "a patent's version starts at 1"),
    ],
)
def test_a_stored_patent_must_tell_a_consistent_story(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidPatentRecord, match=message):
        replace(proposed(), **changes)  # type: ignore[arg-type]


def test_a_stored_retired_patent_needs_its_retirement_data() -> None:
    patent = in_pool()
    with pytest.raises(InvalidPatentRecord, match="exactly the retired patents"):
        replace(patent, status=PatentStatus.RETIRED)
    with pytest.raises(InvalidPatentRecord, match="an admission score is 0 to 100"):
        replace(patent, score=101)


def test_contributor_address_checksums() -> None:
    assert contributor_address(MEMBER) == MEMBER_CHECKSUMMED
    assert contributor_address(MEMBER.upper().replace("0X", "0x")) == MEMBER_CHECKSUMMED
    with pytest.raises(InvalidPatentRecord):
        contributor_address(MEMBER + "0")
    with pytest.raises(InvalidPatentRecord, match="EIP-55 checksum"):
        contributor_address(mistyped(MEMBER_CHECKSUMMED))


def test_every_field_of_technology_of_section_4_1() -> None:
    assert {f.value for f in FieldOfTechnology} == {"blockchain", "ai", "big_data", "quantum", "gene"}


def test_a_stored_patent_never_carries_half_its_pool_data() -> None:
    with pytest.raises(InvalidPatentRecord, match="exactly the admitted patents"):
        replace(proposed(), in_pool_since=date(2026, 2, 1))
    with pytest.raises(InvalidPatentRecord, match="exactly the retired patents"):
        replace(in_pool(), left_pool_on=date(2027, 1, 1))
    with pytest.raises(InvalidPatentRecord, match="exactly the retired patents"):
        replace(in_pool(), retirement_reason=RetirementReason.NON_CORE)
