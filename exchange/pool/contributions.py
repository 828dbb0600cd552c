"""The published BPC mint policy for contributed patents (white paper §3.2, §3.5).

"Startups, through the contribution of patents, direct access to BPC" (§3.2):
when an active member's patent enters the pool, the foundation mints BPC to the
member (``patent_service`` registers and admits a contribution only from one).
How much is a published, versioned :class:`MintPolicy`; :func:`mint_for_admission`
turns an admitted patent into a :class:`MintInstruction` for the chain adapter.

Rules and invariants
--------------------
* ``amount_wei = floor(base_amount_wei * score / 100)``, with ``score`` the
  patent's admission score (0 to 100, see ``assessments``). Integers only;
  rounding is down, so the mint never exceeds what the policy publishes.
* Only contributed patents mint, and only once they are in the pool. A patent
  the foundation bought or filed mints nothing, nor does a zero amount: for those
  :func:`mint_for_admission` returns ``None``.
* Exactly once per patent: the instruction carries ``idempotency_key =
  keccak256("bpc-mint" ‖ patent id ‖ policy version)`` (fields separated by the
  ASCII unit separator, which neither may contain). The service stores the policy
  version with the patent when it is admitted and records the key before sending
  the transaction; a retry or a restart recomputes the same key and finds the
  mint already done. Publishing a new policy version later never re-mints an
  admitted patent, because its key uses the version recorded at admission.
* A policy amount fits a uint256, and so does every mint it can produce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from eth_utils.crypto import keccak

from exchange.kit.errors import ValidationFailed
from exchange.pool.assessments import MAX_SCORE
from exchange.pool.patents import Patent, PatentSource, PatentStatus

BPC_DECIMALS: Final = 18
UINT256_MAX: Final = 2**256 - 1
_VERSION: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_UNIT_SEPARATOR: Final = b"\x1f"


class InvalidMintPolicy(ValidationFailed):
    type_slug = "invalid-mint-policy"
    title = "Invalid mint policy"


class NotMintable(ValidationFailed):
    """The patent is not in a state in which its contribution can be minted."""

    type_slug = "patent-not-mintable"
    title = "Patent not mintable"


@dataclass(frozen=True, slots=True)
class MintPolicy:
    """BPC minted to a contributor per admitted patent: ``base_amount_wei`` at a score of 100."""

    version: str
    base_amount_wei: int

    def __post_init__(self) -> None:
        if not _VERSION.fullmatch(self.version):
            raise InvalidMintPolicy(
                f"a policy version is 1 to 64 letters, digits, '.', '_' or '-', not {self.version!r}"
            )
        if type(self.base_amount_wei) is not int or not 0 < self.base_amount_wei <= UINT256_MAX:
            raise InvalidMintPolicy(
                f"base_amount_wei is a positive integer that fits a uint256, not {self.base_amount_wei!r}"
            )

    def amount_wei(self, score: int) -> int:
        """``floor(base_amount_wei * score / 100)`` for an admission score of 0 to 100."""
        if type(score) is not int or not 0 <= score <= MAX_SCORE:
            raise InvalidMintPolicy(f"a score is an integer from 0 to {MAX_SCORE}, not {score!r}")
        return self.base_amount_wei * score // MAX_SCORE

    def describe(self) -> str:
        """The policy as text for publication."""
        return (
            f"BPC mint policy {self.version}. When a patent contributed by an active member enters the pool, "
            f"the member receives floor({self.base_amount_wei} x score / {MAX_SCORE}) BPC base units "
            f"(1 BPC = 10^{BPC_DECIMALS} base units), where score is the patent's admission score: "
            f"the mean of its expert scores rounded down, from 0 to {MAX_SCORE}. A score of {MAX_SCORE} "
            f"mints {format_bpc(self.base_amount_wei)} BPC; a score of 50 mints "
            f"{format_bpc(self.amount_wei(50))} BPC. Patents the foundation buys or files itself mint "
            "nothing. Only an active member contributes a patent, and it is admitted only while "
            "its contributor still is one: a suspended contributor's patent waits for its "
            "reinstatement, an expelled contributor's (or one on no register) is rejected. Each "
            "patent is minted once, "
            "under the policy version in force when it was admitted; the mint is identified by "
            "keccak256 of the patent's publication number and that version."
        )


@dataclass(frozen=True, slots=True)
class MintInstruction:
    """Mint ``amount_wei`` BPC to ``recipient`` for ``patent_id``, once (``idempotency_key``)."""

    patent_id: str
    recipient: str
    amount_wei: int
    score: int
    policy_version: str
    idempotency_key: str


def mint_for_admission(patent: Patent, policy: MintPolicy) -> MintInstruction | None:
    """The mint owed for ``patent`` under ``policy``, or ``None`` when nothing is owed."""
    if patent.status is not PatentStatus.IN_POOL or patent.score is None:
        raise NotMintable(f"patent {patent.patent_id} is {patent.status.value}, not in the pool")
    if patent.source is not PatentSource.CONTRIBUTED or patent.contributor is None:
        return None
    amount_wei = policy.amount_wei(patent.score)
    if amount_wei == 0:
        return None
    return MintInstruction(
        patent_id=patent.patent_id,
        recipient=patent.contributor,
        amount_wei=amount_wei,
        score=patent.score,
        policy_version=policy.version,
        idempotency_key=mint_idempotency_key(patent.patent_id, policy.version),
    )


def mint_idempotency_key(patent_id: str, policy_version: str) -> str:
    """``0x`` + 64 hex digits: keccak256 of the domain tag, the patent id and the policy version."""
    if not patent_id or not patent_id.isascii() or not patent_id.isalnum():
        raise InvalidMintPolicy(f"a patent id is a compact publication number, not {patent_id!r}")
    if not _VERSION.fullmatch(policy_version):
        raise InvalidMintPolicy(f"{policy_version!r} is not a policy version")
    preimage = _UNIT_SEPARATOR.join((b"bpc-mint", patent_id.encode("ascii"), policy_version.encode("ascii")))
    return "0x" + keccak(preimage).hex()


def format_bpc(amount_wei: int) -> str:
    """Base units as a decimal BPC amount, exactly: ``1500000000000000000`` → ``1.5``."""
    whole, fraction = divmod(amount_wei, 10**BPC_DECIMALS)
    if fraction == 0:
        return str(whole)
    return f"{whole}.{fraction:0{BPC_DECIMALS}d}".rstrip("0")
