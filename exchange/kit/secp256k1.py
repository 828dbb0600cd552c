"""The secp256k1 curve order, and the bound EIP-2 puts on a signature's ``s``."""

from __future__ import annotations

from typing import Final

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
# EIP-2: of the two signatures (s, n - s) of one message by one key, only the low one counts.
# OpenZeppelin's ECDSA refuses the other; so does everything here that recovers a signer.
SECP256K1_HALF_N: Final = SECP256K1_N // 2
