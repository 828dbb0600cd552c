"""EOA signatures are recovered as OpenZeppelin's ECDSA recovers them: the low-s one only."""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import SignableMessage, encode_defunct
from eth_account.signers.local import LocalAccount
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.chain.signatures import is_valid_signature, recover_signer
from exchange.kit.secp256k1 import SECP256K1_HALF_N, SECP256K1_N, low_s

keys = st.binary(min_size=32, max_size=32).filter(lambda key: 0 < int.from_bytes(key, "big") < SECP256K1_N)


def _signed(key: bytes, text: str) -> tuple[LocalAccount, SignableMessage, bytes]:
    account: LocalAccount = Account.from_key(key)
    message = encode_defunct(text=text)
    return account, message, bytes(account.sign_message(message).signature)


def _other_half(signature: bytes) -> bytes:
    """The second signature of the same message by the same key: (r, n - s), v flipped."""
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - v,))


@settings(max_examples=25)
@given(keys, st.text())
def test_only_the_low_s_signature_of_a_message_is_its_signers(key: bytes, text: str) -> None:
    account, message, signature = _signed(key, text)
    assert int.from_bytes(signature[32:64], "big") <= SECP256K1_HALF_N  # as every signer makes them
    assert recover_signer(message, signature) == account.address
    assert is_valid_signature(None, account.address, message, signature)
    high = _other_half(signature)
    assert Account.recover_message(message, signature=high) == account.address  # eth_keys takes it
    assert recover_signer(message, high) is None
    assert not is_valid_signature(None, account.address, message, high)


@settings(max_examples=25)
@given(keys, st.text())
def test_a_high_s_signature_is_brought_to_its_low_s_twin(key: bytes, text: str) -> None:
    _, _, signature = _signed(key, text)
    assert low_s(signature) == signature
    assert low_s(_other_half(signature)) == signature
    as_recovery_id = signature[:64] + bytes((signature[64] - 27,))
    assert low_s(_other_half(signature)[:64] + bytes((_other_half(signature)[64] - 27,))) == as_recovery_id
    assert low_s(signature[:64]) == signature[:64]  # not a 65-byte signature: left as it is
