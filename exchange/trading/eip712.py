"""EIP-712 typed data of the Vault: signed orders and withdrawal authorisations.

Pure functions over plain values; they build exactly what ``Vault.sol`` hashes
(``LibOrder.ORDER_TYPEHASH``, ``LibWithdrawal.WITHDRAWAL_TYPEHASH``) in the
domain ``{name: "BPC Vault", version: "1", chainId, verifyingContract: vault}``.
A signature is therefore bound to one chain and one Vault. Change this module
and the two libraries together; a test compares the hashes with the contract's
``hashOrder`` and ``hashWithdrawal`` views.

The order hash (the EIP-712 digest, what the maker signs) is also the order's
identity on chain: fills, cancellations and ``Trade`` events refer to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from exchange.kit.addresses import address_refusal
from exchange.kit.secp256k1 import is_high_s

DOMAIN_NAME = "BPC Vault"
DOMAIN_VERSION = "1"

_UINT16_MAX = 2**16 - 1
_UINT64_MAX = 2**64 - 1
_UINT256_MAX = 2**256 - 1

DOMAIN_TYPE: list[dict[str, str]] = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
ORDER_TYPE: list[dict[str, str]] = [
    {"name": "maker", "type": "address"},
    {"name": "baseToken", "type": "address"},
    {"name": "quoteToken", "type": "address"},
    {"name": "side", "type": "uint8"},
    {"name": "price", "type": "uint256"},
    {"name": "amount", "type": "uint256"},
    {"name": "maxFeeBps", "type": "uint16"},
    {"name": "nonce", "type": "uint64"},
    {"name": "expiry", "type": "uint64"},
]
WITHDRAWAL_TYPE: list[dict[str, str]] = [
    {"name": "account", "type": "address"},
    {"name": "token", "type": "address"},
    {"name": "amount", "type": "uint256"},
    {"name": "nonce", "type": "uint64"},
    {"name": "expiry", "type": "uint64"},
]


class OrderSide(IntEnum):
    """``LibOrder.Side``: the ``uint8`` the order type carries."""

    BUY = 0
    SELL = 1


def _address(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a 20-byte hex address, got {value!r}")
    refusal = address_refusal(value)
    if refusal is not None:
        raise ValueError(f"{name} {refusal}, got {value!r}")
    return to_checksum_address(value)


def _bounded(name: str, value: int, maximum: int) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be an integer in [0, {maximum}], got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class VaultOrder:
    """A limit order as the maker signs it.

    ``price_quote`` is in quote base units per 10**18 base units (see
    ``exchange.trading.amounts``); ``amount_base`` in base-token base units;
    ``max_fee_bps`` caps the fee rate the operator may charge; ``nonce`` orders
    the maker's orders for ``cancelOrdersBelowNonce``; ``expiry_unix`` is the first
    second at which the order is no longer valid.
    """

    maker: str
    base_token: str
    quote_token: str
    side: OrderSide
    price_quote: int
    amount_base: int
    max_fee_bps: int
    nonce: int
    expiry_unix: int

    def __post_init__(self) -> None:
        for name in ("maker", "base_token", "quote_token"):
            object.__setattr__(self, name, _address(name, getattr(self, name)))
        object.__setattr__(self, "side", OrderSide(self.side))
        _bounded("price_quote", self.price_quote, _UINT256_MAX)
        _bounded("amount_base", self.amount_base, _UINT256_MAX)
        _bounded("max_fee_bps", self.max_fee_bps, _UINT16_MAX)
        _bounded("nonce", self.nonce, _UINT64_MAX)
        _bounded("expiry_unix", self.expiry_unix, _UINT64_MAX)

    def message(self) -> dict[str, Any]:
        """The EIP-712 message, keyed by the type's field names."""
        return {
            "maker": self.maker,
            "baseToken": self.base_token,
            "quoteToken": self.quote_token,
            "side": int(self.side),
            "price": self.price_quote,
            "amount": self.amount_base,
            "maxFeeBps": self.max_fee_bps,
            "nonce": self.nonce,
            "expiry": self.expiry_unix,
        }

    def as_abi_tuple(self) -> tuple[str, str, str, int, int, int, int, int, int]:
        """The ``LibOrder.Order`` tuple for contract calls (``settle``, ``cancelOrder``, ``hashOrder``)."""
        return (
            self.maker,
            self.base_token,
            self.quote_token,
            int(self.side),
            self.price_quote,
            self.amount_base,
            self.max_fee_bps,
            self.nonce,
            self.expiry_unix,
        )


@dataclass(frozen=True, slots=True)
class WithdrawalAuthorisation:
    """The operator's permission for ``account`` to withdraw ``amount_base`` of ``token`` at once."""

    account: str
    token: str
    amount_base: int
    nonce: int
    expiry_unix: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "account", _address("account", self.account))
        object.__setattr__(self, "token", _address("token", self.token))
        _bounded("amount_base", self.amount_base, _UINT256_MAX)
        _bounded("nonce", self.nonce, _UINT64_MAX)
        _bounded("expiry_unix", self.expiry_unix, _UINT64_MAX)

    def message(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "token": self.token,
            "amount": self.amount_base,
            "nonce": self.nonce,
            "expiry": self.expiry_unix,
        }


def vault_domain(chain_id: int, vault: str) -> dict[str, Any]:
    """The Vault's EIP-712 domain on `chain_id`."""
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": _bounded("chain_id", chain_id, _UINT256_MAX),
        "verifyingContract": _address("vault", vault),
    }


def order_typed_data(chain_id: int, vault: str, order: VaultOrder) -> dict[str, Any]:
    """The full EIP-712 typed data of `order` (``eth_signTypedData_v4`` / ``encode_typed_data`` input)."""
    return {
        "types": {"EIP712Domain": DOMAIN_TYPE, "Order": ORDER_TYPE},
        "primaryType": "Order",
        "domain": vault_domain(chain_id, vault),
        "message": order.message(),
    }


def withdrawal_typed_data(chain_id: int, vault: str, withdrawal: WithdrawalAuthorisation) -> dict[str, Any]:
    """The full EIP-712 typed data of a withdrawal authorisation."""
    return {
        "types": {"EIP712Domain": DOMAIN_TYPE, "Withdrawal": WITHDRAWAL_TYPE},
        "primaryType": "Withdrawal",
        "domain": vault_domain(chain_id, vault),
        "message": withdrawal.message(),
    }


def _digest(signable: SignableMessage) -> bytes:
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def order_hash(chain_id: int, vault: str, order: VaultOrder) -> bytes:
    """The 32-byte EIP-712 digest of `order`: what the maker signs and the order's id on chain."""
    return _digest(encode_typed_data(full_message=order_typed_data(chain_id, vault, order)))


def withdrawal_hash(chain_id: int, vault: str, withdrawal: WithdrawalAuthorisation) -> bytes:
    """The 32-byte EIP-712 digest of a withdrawal authorisation: what the operator signs."""
    return _digest(encode_typed_data(full_message=withdrawal_typed_data(chain_id, vault, withdrawal)))


def sign_order(private_key: bytes | str, chain_id: int, vault: str, order: VaultOrder) -> bytes:
    """A 65-byte ``r || s || v`` signature of `order` by `private_key` (an EOA maker)."""
    signable = encode_typed_data(full_message=order_typed_data(chain_id, vault, order))
    return bytes(Account.sign_message(signable, private_key).signature)


def sign_withdrawal(
    private_key: bytes | str, chain_id: int, vault: str, withdrawal: WithdrawalAuthorisation
) -> bytes:
    """The operator's 65-byte signature of a withdrawal authorisation."""
    signable = encode_typed_data(full_message=withdrawal_typed_data(chain_id, vault, withdrawal))
    return bytes(Account.sign_message(signable, private_key).signature)


def recover_order_signer(chain_id: int, vault: str, order: VaultOrder, signature: bytes) -> str:
    """The address whose key produced `signature` over `order` (equal to ``order.maker`` for an EOA).

    Contract wallets sign through ERC-1271 instead; their signatures are checked on
    chain by calling the wallet, which this pure function cannot do. A signature whose ``s``
    is in the upper half of the curve order (EIP-2) is a ValueError, as the Vault refuses it.
    """
    if is_high_s(signature):
        raise ValueError("s is in the upper half of the curve order (a malleable signature)")
    signable = encode_typed_data(full_message=order_typed_data(chain_id, vault, order))
    return to_checksum_address(Account.recover_message(signable, signature=signature))
