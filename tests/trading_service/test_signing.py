"""Request-path order digests equal the reference EIP-712 code and the Vault's; the backend is native."""

from __future__ import annotations

import random

import pytest
from eth_account import Account
from eth_keys.backends.native.main import NativeECCBackend

from exchange.chain.runtime import ChainRuntime
from exchange.trading import eip712
from exchange.trading.signing import (
    NativeBackendMissing,
    OrderDigester,
    OrderFields,
    assert_native_backend,
    recover_signer,
    signature_problem,
)


def test_eth_keys_uses_coincurve() -> None:
    assert_native_backend()


def test_a_pure_python_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECC_BACKEND_CLASS", f"{NativeECCBackend.__module__}.{NativeECCBackend.__name__}")
    with pytest.raises(NativeBackendMissing, match="NativeECCBackend"):
        assert_native_backend()


def _random_order(rng: random.Random, maker: str) -> eip712.VaultOrder:
    return eip712.VaultOrder(
        maker=maker,
        base_token="0x" + rng.randbytes(20).hex(),
        quote_token="0x" + rng.randbytes(20).hex(),
        side=eip712.OrderSide(rng.randrange(2)),
        price_quote=rng.randrange(2**256),
        amount_base=rng.randrange(2**256),
        max_fee_bps=rng.randrange(2**16),
        nonce=rng.randrange(2**64),
        expiry_unix=rng.randrange(2**64),
    )


def test_digest_and_signer_match_the_reference_for_random_orders() -> None:
    rng = random.Random(712)
    for _ in range(50):
        account = Account.from_key(rng.randbytes(32))
        chain_id = rng.randrange(1, 2**64)
        vault = "0x" + rng.randbytes(20).hex()
        order = _random_order(rng, account.address)
        digest = OrderDigester(chain_id, vault).digest(OrderFields.from_vault_order(order))
        assert digest == eip712.order_hash(chain_id, vault, order)
        signature = eip712.sign_order(account.key, chain_id, vault, order)
        assert signature_problem(signature) is None
        assert recover_signer(digest, signature) == account.address.lower()


def test_digest_matches_the_vault(embedded_runtime: ChainRuntime) -> None:
    vault = embedded_runtime.pool.vault
    rng = random.Random(1271)
    for _ in range(5):
        order = _random_order(rng, "0x" + rng.randbytes(20).hex())
        digest = OrderDigester(embedded_runtime.deployment.chain_id, vault.address).digest(
            OrderFields.from_vault_order(order)
        )
        assert bytes(vault.call("hashOrder", order.as_abi_tuple())) == digest


@pytest.mark.parametrize(
    ("signature", "problem"),
    [
        (b"\x01" * 64, "65 bytes"),
        (b"\x01" * 64 + b"\x05", "v must be"),
        (bytes(32) + b"\x01" * 32 + b"\x1b", "r is out of range"),
        (b"\x01" * 32 + b"\xff" * 32 + b"\x1b", "s is zero or in the upper half"),
    ],
)
def test_malformed_signatures_are_named(signature: bytes, problem: str) -> None:
    found = signature_problem(signature)
    assert found is not None
    assert problem in found
