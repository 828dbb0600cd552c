"""Order digests and signer recovery on the request path, with native secp256k1.

``exchange.trading.eip712`` is the reference: it builds the typed data and hashes
it through eth-account, about a millisecond per order, and recovers through
eth-account in about two. Order intake does the same two things per request,
so this module computes the identical EIP-712 digest directly — every field of
``LibOrder.Order`` is a static ABI type, so ``hashStruct`` is one keccak over
ten 32-byte words — and recovers the signer with libsecp256k1 (coincurve), the
backend eth-keys itself uses. A test holds the digests equal to ``eip712``'s
and to the contract's for random orders.

A key's signature is taken as the Vault's OpenZeppelin ``ECDSA`` takes it: 65
bytes, ``v`` 27/28 (0/1 accepted and normalised), ``r`` and ``s`` in range, and no
malleable high-``s`` form (:func:`signature_problem` says what is wrong). Anything
else can only be a contract wallet's (ERC-1271), which the service asks on chain, as
the Vault does at settlement.
"""

from __future__ import annotations

from dataclasses import dataclass

import coincurve
from eth_keys.backends.coincurve import CoinCurveECCBackend
from eth_keys.main import KeyAPI
from sha3 import keccak_256  # type: ignore[import-untyped]  # safe-pysha3 ships no stubs

from exchange.kit.secp256k1 import SECP256K1_HALF_N, SECP256K1_N
from exchange.trading.eip712 import DOMAIN_NAME, DOMAIN_VERSION, ORDER_TYPE, VaultOrder

# The longest order signature taken: a contract wallet's (ERC-1271) may be anything its
# isValidSignature reads, such as a Safe's 65 bytes per owner (31 owners fit).
MAX_SIGNATURE_BYTES = 2048


def keccak(data: bytes) -> bytes:
    digest: bytes = keccak_256(data).digest()
    return digest


_ORDER_TYPE_STRING = "Order(" + ",".join(f"{field['type']} {field['name']}" for field in ORDER_TYPE) + ")"
ORDER_TYPEHASH = keccak(_ORDER_TYPE_STRING.encode())
_DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)


class NativeBackendMissing(RuntimeError):
    """eth-keys would recover signatures in pure Python: the service refuses to start."""


def assert_native_backend() -> None:
    """Raise unless eth-keys (hence eth-account and sign-in) recovers with coincurve."""
    backend = KeyAPI().backend
    if not isinstance(backend, CoinCurveECCBackend):
        raise NativeBackendMissing(
            f"eth-keys uses {type(backend).__name__}, not CoinCurveECCBackend: install coincurve "
            "and unset ECC_BACKEND_CLASS"
        )


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address_hex: str) -> bytes:
    return bytes(12) + bytes.fromhex(address_hex[2:])


def domain_separator(chain_id: int, vault: str) -> bytes:
    return keccak(
        _DOMAIN_TYPEHASH
        + keccak(DOMAIN_NAME.encode())
        + keccak(DOMAIN_VERSION.encode())
        + _word(chain_id)
        + _address_word(vault)
    )


@dataclass(frozen=True, slots=True)
class OrderFields:
    """The signed fields of an order, already range-checked; addresses as 0x-hex of any case."""

    maker: str
    base_token: str
    quote_token: str
    side: int  # LibOrder.Side: 0 buy, 1 sell
    price_quote: int
    amount_base: int
    max_fee_bps: int
    nonce: int
    expiry_unix: int

    @classmethod
    def from_vault_order(cls, order: VaultOrder) -> OrderFields:
        """The fields of an order built (and range-checked) by the reference ``eip712`` code."""
        return cls(
            maker=order.maker,
            base_token=order.base_token,
            quote_token=order.quote_token,
            side=int(order.side),
            price_quote=order.price_quote,
            amount_base=order.amount_base,
            max_fee_bps=order.max_fee_bps,
            nonce=order.nonce,
            expiry_unix=order.expiry_unix,
        )


class OrderDigester:
    """EIP-712 digests of orders in one Vault's domain (chain id and Vault address)."""

    __slots__ = ("_prefix",)

    def __init__(self, chain_id: int, vault: str) -> None:
        self._prefix = b"\x19\x01" + domain_separator(chain_id, vault)

    def digest(self, order: OrderFields) -> bytes:
        struct_hash = keccak(
            ORDER_TYPEHASH
            + _address_word(order.maker)
            + _address_word(order.base_token)
            + _address_word(order.quote_token)
            + _word(order.side)
            + _word(order.price_quote)
            + _word(order.amount_base)
            + _word(order.max_fee_bps)
            + _word(order.nonce)
            + _word(order.expiry_unix)
        )
        return keccak(self._prefix + struct_hash)


def signature_problem(signature: bytes) -> str | None:
    """Why the Vault's ECDSA would refuse this signature outright, or None."""
    if len(signature) != 65:
        return f"a signature is 65 bytes (r, s, v), got {len(signature)}"
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if signature[64] not in (0, 1, 27, 28):
        return f"v must be 27 or 28 (or the recovery id 0 or 1), got {signature[64]}"
    if not 0 < r < SECP256K1_N:
        return "r is out of range"
    if not 0 < s <= SECP256K1_HALF_N:
        return "s is zero or in the upper half of the curve order (a malleable signature)"
    return None


def canonical_signature(signature: bytes) -> bytes:
    """``signature`` with ``v`` as 27 or 28, the form the Vault's ECDSA recovers.

    Some signers give ``v`` as the bare recovery id (0 or 1). Such a signature recovers here,
    but OpenZeppelin's ECDSA passes ``v`` to ``ecrecover`` as it is, which then finds no
    signer, and the Vault would refuse every fill of the order at settlement. Call
    :func:`signature_problem` first.
    """
    v = signature[64]
    return signature if v >= 27 else signature[:64] + bytes((v + 27,))


def signed_by_key(digest: bytes, signature: bytes, maker: str) -> bool:
    """Whether ``signature`` is the ECDSA signature of ``maker``'s own key over ``digest``, as the
    Vault checks it first (a contract wallet's signature is anything else its wallet accepts)."""
    return signature_problem(signature) is None and recover_signer(digest, signature) == maker.lower()


def recover_signer(digest: bytes, signature: bytes) -> str | None:
    """The lower-case 0x address whose key signed ``digest``, or None if no key did.

    Call :func:`signature_problem` first; this only recovers.
    """
    v = signature[64]
    recoverable = signature[:64] + bytes((v - 27 if v >= 27 else v,))
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(recoverable, digest, hasher=None)
    except (ValueError, TypeError):
        return None
    return "0x" + keccak(public_key.format(compressed=False)[1:])[-20:].hex()
