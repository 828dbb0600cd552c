"""Expert assessments of a patent and the published admission policy (§3.1, §5.1.4).

Experts of the committee each assess a patent once: a score from 0 to 100, a
verdict core / non-core ("non-core blockchain technology patents" leave the
pool, §3.1), and notes. :func:`decide_admission` applies an
:class:`AdmissionPolicy` to a patent's assessments and returns an
:class:`AdmissionDecision` that says, criterion by criterion, why.

Rules and invariants
--------------------
* A patent is admitted when all of these hold:
  at least ``min_assessments`` assessments; a mean score of at least
  ``min_mean_score``; and, if ``require_core_majority``, more than half of the
  experts judge it core (a tie is not a majority).
* The mean is exact: the test is ``sum(scores) >= min_mean_score * n`` in
  integers, and the decision reports the mean as a :class:`~fractions.Fraction`.
  No float is involved.
* The decision's ``score`` — the mean rounded down to an integer, 0 to 100 — is
  the patent's admission score, which the mint and royalty rules use.
* Each expert assesses a patent once, and never one they contributed: a second
  assessment by the same expert, an assessment by the contributor, or an
  assessment of another patent is refused (:class:`InvalidAssessment`). Expert
  ids are compared case-insensitively, so one address in two spellings is one
  expert.
* Scores are ints (``bool`` is refused), so ``True`` can never count as 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from exchange.kit.errors import ValidationFailed

MAX_SCORE: Final = 100
MAX_NOTES_LENGTH: Final = 4000


class InvalidAssessment(ValidationFailed):
    """An assessment or an admission policy breaks a rule of this module."""

    type_slug = "invalid-assessment"
    title = "Invalid assessment"


@dataclass(frozen=True, slots=True)
class Assessment:
    """One expert's assessment of one patent."""

    patent_id: str
    expert: str
    score: int
    core: bool
    notes: str = ""

    def __post_init__(self) -> None:
        if type(self.score) is not int or not 0 <= self.score <= MAX_SCORE:
            raise InvalidAssessment(f"a score is an integer from 0 to {MAX_SCORE}, not {self.score!r}")
        if type(self.core) is not bool:
            raise InvalidAssessment(f"'core' is true or false, not {self.core!r}")
        if not self.patent_id:
            raise InvalidAssessment("an assessment names its patent")
        if not self.expert.strip():
            raise InvalidAssessment("an assessment names its expert")
        if len(self.notes) > MAX_NOTES_LENGTH:
            raise InvalidAssessment(f"assessment notes have at most {MAX_NOTES_LENGTH} characters")


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """What the experts' assessments must show for a patent to enter the pool."""

    min_assessments: int = 3
    min_mean_score: int = 60
    require_core_majority: bool = True

    def __post_init__(self) -> None:
        if type(self.min_assessments) is not int or self.min_assessments < 1:
            raise InvalidAssessment(
                f"min_assessments is an integer of at least 1, not {self.min_assessments!r}"
            )
        if type(self.min_mean_score) is not int or not 0 <= self.min_mean_score <= MAX_SCORE:
            raise InvalidAssessment(
                f"min_mean_score is an integer from 0 to {MAX_SCORE}, not {self.min_mean_score!r}"
            )

    def describe(self) -> str:
        """The policy as text for publication."""
        conditions = [
            f"at least {self.min_assessments} "
            + ("expert has" if self.min_assessments == 1 else "experts have")
            + " assessed it",
            f"the mean of their scores (0 to {MAX_SCORE}) is at least {self.min_mean_score}",
        ]
        if self.require_core_majority:
            conditions.append("more than half of them judge it core to the pool")
        return (
            f"A patent enters the pool when {', '.join(conditions[:-1])} and {conditions[-1]}. "
            "The mean is computed exactly; the patent's admission score is that mean rounded down."
        )


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    """The outcome for one patent, with one reason per criterion, in policy order."""

    patent_id: str
    admitted: bool
    reasons: tuple[str, ...]
    assessment_count: int
    score_sum: int
    core_count: int
    policy: AdmissionPolicy

    @property
    def mean_score(self) -> Fraction | None:
        """The exact mean score, or ``None`` without assessments."""
        return mean_score(self.score_sum, self.assessment_count)

    @property
    def score(self) -> int:
        """The admission score: the mean rounded down (0 without assessments)."""
        if self.assessment_count == 0:
            return 0
        return self.score_sum // self.assessment_count


def decide_admission(
    patent_id: str,
    assessments: Iterable[Assessment],
    policy: AdmissionPolicy,
    *,
    contributor: str | None = None,
) -> AdmissionDecision:
    """Apply ``policy`` to the assessments of ``patent_id`` (contributed by ``contributor``, if any)."""
    experts: set[str] = set()
    count = score_sum = core_count = 0
    for assessment in assessments:
        if assessment.patent_id != patent_id:
            raise InvalidAssessment(f"an assessment of {assessment.patent_id} was given for {patent_id}")
        expert = assessment.expert.strip().lower()
        if expert in experts:
            raise InvalidAssessment(f"expert {assessment.expert!r} assessed {patent_id} more than once")
        if contributor is not None and expert == contributor.strip().lower():
            raise InvalidAssessment(
                f"expert {assessment.expert!r} contributed {patent_id} and cannot assess it"
            )
        experts.add(expert)
        count += 1
        score_sum += assessment.score
        core_count += 1 if assessment.core else 0

    checks = [_enough_assessments(count, policy), _mean_high_enough(count, score_sum, policy)]
    if policy.require_core_majority:
        checks.append(_core_majority(count, core_count))
    return AdmissionDecision(
        patent_id=patent_id,
        admitted=all(passed for passed, _ in checks),
        reasons=tuple(reason for _, reason in checks),
        assessment_count=count,
        score_sum=score_sum,
        core_count=core_count,
        policy=policy,
    )


def mean_score(score_sum: int, count: int) -> Fraction | None:
    """The exact mean of ``count`` scores summing to ``score_sum``, or ``None`` without scores."""
    return Fraction(score_sum, count) if count else None


def format_fraction(value: Fraction) -> str:
    """``215/3`` as ``71 2/3``: exact, and readable in a published decision."""
    whole, rest = divmod(value.numerator, value.denominator)
    if rest == 0:
        return str(whole)
    return f"{whole} {rest}/{value.denominator}"


def _enough_assessments(count: int, policy: AdmissionPolicy) -> tuple[bool, str]:
    passed = count >= policy.min_assessments
    relation = "meets" if passed else "is below"
    return passed, f"{count} assessment(s) {relation} the minimum of {policy.min_assessments}"


def _mean_high_enough(count: int, score_sum: int, policy: AdmissionPolicy) -> tuple[bool, str]:
    if count == 0:
        return False, f"no scores, so no mean to compare with {policy.min_mean_score}"
    passed = score_sum >= policy.min_mean_score * count
    mean = format_fraction(Fraction(score_sum, count))
    relation = "reaches" if passed else "is below"
    return passed, f"mean score {mean} {relation} the minimum of {policy.min_mean_score}"


def _core_majority(count: int, core_count: int) -> tuple[bool, str]:
    passed = 2 * core_count > count
    relation = "a majority" if passed else "no majority"
    return passed, f"{core_count} of {count} expert(s) judge it core: {relation}"
