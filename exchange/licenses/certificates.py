"""Self-certification (white paper §4.7): a BPR holder's signed statement that it holds the licence.

Pure rules: the certificate's EIP-712 form, its compact text form (for QR codes), and the
checks a verifier runs against facts read from the chain. Reading those facts and checking
the signature (EOA or ERC-1271 wallet) is the adapters' work (``service.py``, the CLI).

Typed data (EIP-712)
--------------------
Domain ``{name: "Patent Pool Licence Certificate", version: "1", chainId, verifyingContract}``
where ``verifyingContract`` is the pool's BPR token: the contract whose state the certificate
speaks about. Primary type::

    LicenceCertificate(address holder,address pool,string statement,uint64 issuedAt,
                       uint64 expiresAt,uint256 nonce)

``pool`` is the pool's PoolRegistry address; ``issuedAt``/``expiresAt`` are unix seconds and
bound the certificate's validity, judged by the timestamp of the block it is checked at.
The holder signs it with ``eth_signTypedData_v4`` (or its contract wallet approves the digest
through ERC-1271).

Nonces are not tracked. A certificate is a statement, not an action: showing it twice
changes nothing, and it is true exactly while the on-chain licence is live and the
certificate's own term runs. The nonce only makes two certificates with the same fields
distinct. To withdraw certificates a holder gives short terms, or ends its licence on
chain, which every verifier sees. No revocation list exists that an independent verifier
would have to ask the service about.

Compact form
------------
``BPCERT1:`` followed by base64url (no padding) of, big-endian::

    chainId (8) | verifyingContract (20) | holder (20) | pool (20) | issuedAt (8) |
    expiresAt (8) | nonce (32) | signature length (2) | signature | statement (UTF-8, to the end)

The domain name and version are implied by the ``1``. A 65-byte signature and a 60-character
statement make about 330 characters: a QR code of version 10-12 at error correction level M.

Reasons a certificate fails (:class:`ReasonCode`): ``bad_signature``, ``signer_not_holder``,
``wrong_chain``, ``wrong_pool``, ``not_yet_valid``, ``expired``, ``holder_not_licensed``,
``fee_licence_expired``, ``holder_expelled``. Every applicable reason is reported, not only the
first. ``holder_expelled``: the PoolRegistry lists the holder as expelled at the block checked.
Expulsion and the revocation of the licence it entails are two transactions; the certificate
fails from the first on, though the licence is live until the second lands. A suspended
member keeps its licence, so its certificates hold.
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Final

from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils.address import to_checksum_address

from exchange.kit.addresses import address_refusal
from exchange.kit.errors import ValidationFailed

DOMAIN_NAME: Final = "Patent Pool Licence Certificate"
DOMAIN_VERSION: Final = "1"
PRIMARY_TYPE: Final = "LicenceCertificate"
COMPACT_PREFIX: Final = "BPCERT1:"
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")  # padding optional, as encoders differ
MAX_STATEMENT_BYTES: Final = 1_000
UINT64_MAX: Final = 2**64 - 1

TYPES: Final[dict[str, list[dict[str, str]]]] = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    PRIMARY_TYPE: [
        {"name": "holder", "type": "address"},
        {"name": "pool", "type": "address"},
        {"name": "statement", "type": "string"},
        {"name": "issuedAt", "type": "uint64"},
        {"name": "expiresAt", "type": "uint64"},
        {"name": "nonce", "type": "uint256"},
    ],
}
_FIXED = struct.Struct(">Q20s20s20sQQ32sH")


class InvalidCertificate(ValidationFailed):
    """The certificate is not a well-formed licence certificate; ``reason`` says why."""

    type_slug = "invalid-certificate"
    title = "Invalid licence certificate"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, extra={"reason": reason})
        self.reason = reason


class LicenceState(IntEnum):
    """The licence kinds of IBPR.LicenceKind that matter to a verifier."""

    NONE = 0
    LOCKED = 1
    NON_PROFIT = 2
    FEE = 3


@dataclass(frozen=True, slots=True)
class Certificate:
    """One licence certificate, as signed."""

    chain_id: int
    verifying_contract: str
    holder: str
    pool: str
    statement: str
    issued_at: int
    expires_at: int
    nonce: int

    def __post_init__(self) -> None:
        if not 0 < self.chain_id <= UINT64_MAX:
            raise InvalidCertificate(f"chainId {self.chain_id} is outside 1..2^64-1")
        for name in ("verifying_contract", "holder", "pool"):
            value = getattr(self, name)
            refusal = address_refusal(value) if isinstance(value, str) else "is not an address"
            if refusal is not None:
                raise InvalidCertificate(f"{name} {refusal}: {value!r}")
            object.__setattr__(self, name, to_checksum_address(value))
        try:
            statement = self.statement.encode("utf-8")
        except UnicodeEncodeError:
            # JSON can spell a lone surrogate ("\ud800"); no UTF-8 string, so no EIP-712 one.
            raise InvalidCertificate(
                "the statement holds an unpaired surrogate: it is not Unicode text"
            ) from None
        if len(statement) > MAX_STATEMENT_BYTES:
            raise InvalidCertificate(f"the statement is longer than {MAX_STATEMENT_BYTES} bytes")
        for name in ("issued_at", "expires_at"):
            if not 0 <= getattr(self, name) <= UINT64_MAX:
                raise InvalidCertificate(f"{name} is not a uint64")
        if self.expires_at <= self.issued_at:
            raise InvalidCertificate("expiresAt must be after issuedAt")
        if not 0 <= self.nonce < 2**256:
            raise InvalidCertificate("nonce is not a uint256")

    def domain(self) -> dict[str, Any]:
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }

    def message(self) -> dict[str, Any]:
        return {
            "holder": self.holder,
            "pool": self.pool,
            "statement": self.statement,
            "issuedAt": self.issued_at,
            "expiresAt": self.expires_at,
            "nonce": self.nonce,
        }

    def typed_data(self) -> dict[str, Any]:
        """The full EIP-712 document, as ``eth_signTypedData_v4`` takes it."""
        return {
            "types": TYPES,
            "primaryType": PRIMARY_TYPE,
            "domain": self.domain(),
            "message": self.message(),
        }

    def signable(self) -> SignableMessage:
        return encode_typed_data(full_message=self.typed_data())

    @classmethod
    def from_typed_data(cls, data: Any) -> Certificate:
        """Read a certificate from its EIP-712 document (``types`` and ``primaryType`` optional).

        Given ``types`` must be exactly this certificate's: a signature over other types is a
        signature over another message.
        """
        if not isinstance(data, dict):
            raise InvalidCertificate("the certificate is a JSON object with domain and message")
        if "types" in data and data["types"] != TYPES:
            raise InvalidCertificate("the types are not those of a LicenceCertificate")
        if data.get("primaryType", PRIMARY_TYPE) != PRIMARY_TYPE:
            raise InvalidCertificate(f"primaryType must be {PRIMARY_TYPE}")
        domain, message = data.get("domain"), data.get("message")
        if not isinstance(domain, dict) or not isinstance(message, dict):
            raise InvalidCertificate("the certificate needs a domain object and a message object")
        if set(domain) != {"name", "version", "chainId", "verifyingContract"}:
            raise InvalidCertificate("the domain has exactly name, version, chainId and verifyingContract")
        if (domain["name"], domain["version"]) != (DOMAIN_NAME, DOMAIN_VERSION):
            raise InvalidCertificate(f"the domain is not {DOMAIN_NAME!r} version {DOMAIN_VERSION}")
        expected = {field["name"] for field in TYPES[PRIMARY_TYPE]}
        if set(message) != expected:
            raise InvalidCertificate(f"the message has exactly the fields {sorted(expected)}")
        if not isinstance(message["statement"], str):
            raise InvalidCertificate("statement is a string")
        return cls(
            chain_id=_integer(domain["chainId"], "chainId"),
            verifying_contract=domain["verifyingContract"],
            holder=message["holder"],
            pool=message["pool"],
            statement=message["statement"],
            issued_at=_integer(message["issuedAt"], "issuedAt"),
            expires_at=_integer(message["expiresAt"], "expiresAt"),
            nonce=_integer(message["nonce"], "nonce"),
        )

    def to_compact(self, signature: bytes) -> str:
        """The compact text form with `signature`, for a QR code."""
        if len(signature) > 0xFFFF:
            raise InvalidCertificate("the signature is too long")
        fixed = _FIXED.pack(
            self.chain_id,
            bytes.fromhex(self.verifying_contract[2:]),
            bytes.fromhex(self.holder[2:]),
            bytes.fromhex(self.pool[2:]),
            self.issued_at,
            self.expires_at,
            self.nonce.to_bytes(32, "big"),
            len(signature),
        )
        payload = fixed + signature + self.statement.encode("utf-8")
        return COMPACT_PREFIX + base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")

    @classmethod
    def from_compact(cls, text: str) -> tuple[Certificate, bytes]:
        """The certificate and signature of a compact text form."""
        text = text.strip()
        if not text.startswith(COMPACT_PREFIX):
            raise InvalidCertificate(f"a compact certificate starts with {COMPACT_PREFIX}")
        body = text[len(COMPACT_PREFIX) :]
        # The decoder skips what is not of the alphabet: damaged text must not verify.
        if not _BASE64URL.fullmatch(body):
            raise InvalidCertificate(
                "the compact certificate is not base64url (A-Z a-z 0-9 - _, then = padding)"
            )
        try:
            body = body.rstrip("=")
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            raise InvalidCertificate("the compact certificate is not base64url") from None
        if len(payload) < _FIXED.size:
            raise InvalidCertificate("the compact certificate is truncated")
        chain_id, contract, holder, pool, issued_at, expires_at, nonce, length = _FIXED.unpack_from(payload)
        signature = payload[_FIXED.size : _FIXED.size + length]
        if len(signature) != length:
            raise InvalidCertificate("the compact certificate is truncated")
        try:
            statement = payload[_FIXED.size + length :].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCertificate("the statement is not UTF-8") from None
        certificate = cls(
            chain_id=chain_id,
            verifying_contract="0x" + contract.hex(),
            holder="0x" + holder.hex(),
            pool="0x" + pool.hex(),
            statement=statement,
            issued_at=issued_at,
            expires_at=expires_at,
            nonce=int.from_bytes(nonce, "big"),
        )
        return certificate, signature


def _integer(value: object, name: str) -> int:
    """EIP-712 integers arrive as JSON numbers or as decimal/0x strings (wallets use both)."""
    if isinstance(value, bool):
        raise InvalidCertificate(f"{name} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16) if value.lower().startswith("0x") else int(value, 10)
        except ValueError:
            pass
    raise InvalidCertificate(f"{name} is not an integer")


class SignatureVerdict(StrEnum):
    """What the signature check found."""

    VALID = "valid"  # the holder signed: its key, or its wallet through ERC-1271
    MALFORMED = "malformed"  # the bytes are no signature anyone made
    OTHER_SIGNER = "other_signer"  # a valid signature, by someone else


class ReasonCode(StrEnum):
    BAD_SIGNATURE = "bad_signature"
    SIGNER_NOT_HOLDER = "signer_not_holder"
    WRONG_CHAIN = "wrong_chain"
    WRONG_POOL = "wrong_pool"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    HOLDER_NOT_LICENSED = "holder_not_licensed"
    FEE_LICENCE_EXPIRED = "fee_licence_expired"
    HOLDER_EXPELLED = "holder_expelled"


@dataclass(frozen=True, slots=True)
class Reason:
    code: ReasonCode
    message: str


@dataclass(frozen=True, slots=True)
class ChainFacts:
    """What the chain says at the block the certificate is checked at."""

    chain_id: int
    bpr: str
    registry: str
    block_number: int
    block_timestamp: int
    licence_kind: LicenceState
    licence_expires_at: int
    licensed: bool
    licence_since_block: int
    holder_expelled: bool = False  # the PoolRegistry lists the holder as expelled


def check(
    certificate: Certificate, signature: SignatureVerdict, signer: str | None, facts: ChainFacts
) -> list[Reason]:
    """Every reason the certificate fails at ``facts.block_number``; empty when it holds.

    `signer` is the address an EOA signature recovers to, if any (named in the reason).
    """
    reasons: list[Reason] = []
    if signature is SignatureVerdict.MALFORMED:
        reasons.append(
            Reason(
                ReasonCode.BAD_SIGNATURE,
                "the signature is not a valid signature of this certificate (a key's is 65 bytes "
                "r, s, v with s in the lower half of the curve order, EIP-2; a wallet's, one it accepts)",
            )
        )
    elif signature is SignatureVerdict.OTHER_SIGNER:
        reasons.append(
            Reason(
                ReasonCode.SIGNER_NOT_HOLDER,
                f"signed by {signer or 'another key'}, not by the holder {certificate.holder}"
                " (nor approved by it as an ERC-1271 wallet)",
            )
        )
    if certificate.chain_id != facts.chain_id:
        reasons.append(
            Reason(
                ReasonCode.WRONG_CHAIN,
                f"signed for chain {certificate.chain_id}, checked on chain {facts.chain_id}",
            )
        )
    if certificate.verifying_contract != facts.bpr:
        reasons.append(
            Reason(
                ReasonCode.WRONG_POOL,
                f"signed for licence token {certificate.verifying_contract}, the pool's is {facts.bpr}",
            )
        )
    if certificate.pool != facts.registry:
        reasons.append(
            Reason(
                ReasonCode.WRONG_POOL,
                f"names pool {certificate.pool}, the pool's registry is {facts.registry}",
            )
        )
    block = f"block {facts.block_number} (time {facts.block_timestamp})"
    at = f"at {block}"
    if certificate.issued_at > facts.block_timestamp:
        reasons.append(
            Reason(ReasonCode.NOT_YET_VALID, f"issued for {certificate.issued_at}, not yet valid {at}")
        )
    if certificate.expires_at <= facts.block_timestamp:
        reasons.append(Reason(ReasonCode.EXPIRED, f"expired at {certificate.expires_at}, before {block}"))
    if not facts.licensed:
        if facts.licence_kind is LicenceState.FEE:
            reasons.append(
                Reason(
                    ReasonCode.FEE_LICENCE_EXPIRED,
                    f"{certificate.holder}'s fee licence expired at {facts.licence_expires_at}, "
                    f"before {block}",
                )
            )
        else:
            reasons.append(
                Reason(ReasonCode.HOLDER_NOT_LICENSED, f"{certificate.holder} holds no BPR licence {at}")
            )
    if facts.holder_expelled:
        reasons.append(
            Reason(ReasonCode.HOLDER_EXPELLED, f"{certificate.holder} was expelled from the pool {at}")
        )
    return reasons
