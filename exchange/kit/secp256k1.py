"""The secp256k1 curve order, and the bound EIP-2 puts on a signature's ``s``."""

from __future__ import annotations

from typing import Final

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
# EIP-2: of the two signatures (s, n - s) of one message by one key, only the low one counts.
# OpenZeppelin's ECDSA refuses the other; so does everything here that recovers a signer.
SECP256K1_HALF_N: Final = SECP256K1_N // 2


def is_high_s(signature: bytes) -> bool:
    """Whether ``signature`` (65 bytes r ‖ s ‖ v) has the ``s`` EIP-2 refuses."""
    return len(signature) == 65 and int.from_bytes(signature[32:64], "big") > SECP256K1_HALF_N


def low_s(signature: bytes) -> bytes:
    """``signature`` (65 bytes r ‖ s ‖ v) in its low-s form: the same signer over the same digest.

    For a trusted signer that may not normalise (a node's ``eth_signTypedData``): its high-s
    answer is a valid signature the Vault's ECDSA would refuse. Anything else is returned as is.
    """
    s = int.from_bytes(signature[32:64], "big")
    if not is_high_s(signature) or s >= SECP256K1_N or signature[64] not in (0, 1, 27, 28):
        return signature
    v = signature[64]
    flipped = v ^ 1 if v < 27 else 55 - v  # the other recovery id, in the same notation
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((flipped,))
