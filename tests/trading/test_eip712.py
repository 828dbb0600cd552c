"""The Python EIP-712 builders hash and sign exactly as the Vault contract does."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3.logs import DISCARD

from exchange.chain.errors import ContractReverted
from exchange.chain.provider import make_web3
from exchange.kit.secp256k1 import SECP256K1_N
from exchange.trading.amounts import settlement_amounts
from exchange.trading.eip712 import (
    ORDER_TYPE,
    WITHDRAWAL_TYPE,
    OrderSide,
    VaultOrder,
    WithdrawalAuthorisation,
    order_hash,
    order_typed_data,
    recover_order_signer,
    sign_order,
    sign_withdrawal,
    vault_domain,
    withdrawal_hash,
    withdrawal_typed_data,
)
from tests.trading.vault_chain import VaultChain, deploy_vault_chain

BPC = 10**18
USD = 10**6
FAR_EXPIRY = 2**40

addresses = st.binary(min_size=20, max_size=20).map(Web3.to_checksum_address)
uint = st.integers(min_value=0, max_value=2**256 - 1)
orders = st.builds(
    VaultOrder,
    maker=addresses,
    base_token=addresses,
    quote_token=addresses,
    side=st.sampled_from(OrderSide),
    price_quote=uint,
    amount_base=uint,
    max_fee_bps=st.integers(0, 2**16 - 1),
    nonce=st.integers(0, 2**64 - 1),
    expiry_unix=st.integers(0, 2**64 - 1),
)
withdrawals = st.builds(
    WithdrawalAuthorisation,
    account=addresses,
    token=addresses,
    amount_base=uint,
    nonce=st.integers(0, 2**64 - 1),
    expiry_unix=st.integers(0, 2**64 - 1),
)


@pytest.fixture(scope="module")
def chain() -> VaultChain:
    return deploy_vault_chain(make_web3())


@pytest.fixture
def fresh(chain: VaultChain) -> Any:
    """The module's chain, reverted to its deployed state after the test."""
    snapshot = chain.w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    yield chain
    chain.w3.provider.make_request("evm_revert", [snapshot])  # type: ignore[arg-type]


def _keys(chain: VaultChain) -> list[bytes]:
    backend = chain.w3.provider.ethereum_tester.backend  # type: ignore[attr-defined]
    return [bytes(key.to_bytes()) for key in backend.account_keys]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=orders)
def test_order_hash_equals_the_contracts_hash_order(chain: VaultChain, order: VaultOrder) -> None:
    expected = chain.vault.call("hashOrder", order.as_abi_tuple())
    assert order_hash(chain.chain_id, chain.vault.address, order) == bytes(expected)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(withdrawal=withdrawals)
def test_withdrawal_hash_equals_the_contracts_hash_withdrawal(
    chain: VaultChain, withdrawal: WithdrawalAuthorisation
) -> None:
    message = withdrawal.message()
    expected = chain.vault.call("hashWithdrawal", *message.values())
    assert withdrawal_hash(chain.chain_id, chain.vault.address, withdrawal) == bytes(expected)


def test_domain_matches_the_contracts_eip5267_domain(chain: VaultChain) -> None:
    domain = chain.vault.call("eip712Domain")
    _fields, name, version, chain_id, verifying_contract, _salt, _extensions = domain
    assert vault_domain(chain.chain_id, chain.vault.address) == {
        "name": name,
        "version": version,
        "chainId": chain_id,
        "verifyingContract": verifying_contract,
    }


def test_typed_data_binds_chain_and_vault() -> None:
    order = VaultOrder(
        maker="0x" + "11" * 20,
        base_token="0x" + "22" * 20,
        quote_token="0x" + "33" * 20,
        side=OrderSide.BUY,
        price_quote=2 * USD,
        amount_base=BPC,
        max_fee_bps=30,
        nonce=1,
        expiry_unix=FAR_EXPIRY,
    )
    vault = "0x" + "44" * 20
    digest = order_hash(1, vault, order)
    assert digest != order_hash(5, vault, order)
    assert digest != order_hash(1, "0x" + "45" * 20, order)
    typed = order_typed_data(1, vault, order)
    assert typed["primaryType"] == "Order"
    assert typed["message"]["maker"] == Web3.to_checksum_address("0x" + "11" * 20)
    withdrawal = WithdrawalAuthorisation(vault, vault, 1, 2, 3)
    assert withdrawal_typed_data(1, vault, withdrawal)["primaryType"] == "Withdrawal"


def test_only_the_low_s_signature_of_an_order_recovers() -> None:
    key = b"\x42" * 32
    maker = Account.from_key(key).address
    order = VaultOrder(maker, "0x" + "22" * 20, "0x" + "33" * 20, OrderSide.SELL, USD, BPC, 30, 1, FAR_EXPIRY)
    vault = "0x" + "44" * 20
    signature = sign_order(key, 1, vault, order)
    assert recover_order_signer(1, vault, order, signature) == maker
    s = int.from_bytes(signature[32:64], "big")
    twin = signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - signature[64],))
    with pytest.raises(ValueError, match="upper half"):
        recover_order_signer(1, vault, order, twin)


def test_type_strings_hash_to_the_contract_typehashes() -> None:
    # LibOrder.ORDER_TYPEHASH and LibWithdrawal.WITHDRAWAL_TYPEHASH, as EIP-712 encodeType spells them.
    def encode_type(name: str, fields: list[dict[str, str]]) -> bytes:
        members = ",".join(f"{field['type']} {field['name']}" for field in fields)
        return f"{name}({members})".encode()

    assert encode_type("Order", ORDER_TYPE) == (
        b"Order(address maker,address baseToken,address quoteToken,uint8 side,uint256 price,uint256 amount,"
        b"uint16 maxFeeBps,uint64 nonce,uint64 expiry)"
    )
    assert keccak(encode_type("Withdrawal", WITHDRAWAL_TYPE)) == keccak(
        b"Withdrawal(address account,address token,uint256 amount,uint64 nonce,uint64 expiry)"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_fee_bps", 2**16),
        ("nonce", -1),
        ("expiry_unix", 2**64),
        ("amount_base", 2**256),
        ("price_quote", 1.5),
        ("maker", "0x1234"),
    ],
)
def test_order_rejects_values_outside_their_eip712_type(field: str, value: Any) -> None:
    fields: dict[str, Any] = {
        "maker": "0x" + "11" * 20,
        "base_token": "0x" + "22" * 20,
        "quote_token": "0x" + "33" * 20,
        "side": OrderSide.SELL,
        "price_quote": 1,
        "amount_base": 1,
        "max_fee_bps": 0,
        "nonce": 0,
        "expiry_unix": 0,
    }
    fields[field] = value
    with pytest.raises(ValueError, match=field):
        VaultOrder(**fields)


def test_python_signatures_settle_on_chain_with_the_mirrored_amounts(fresh: VaultChain) -> None:
    chain = fresh
    keys = _keys(chain)
    seller_key, buyer_key = keys[3], keys[4]
    seller, buyer = Account.from_key(seller_key).address, Account.from_key(buyer_key).address
    for trader in (seller, buyer):
        chain.open_account(trader, base_wei=100 * BPC, quote_units=10_000 * USD)

    def order(maker: str, side: OrderSide, price_quote: int) -> VaultOrder:
        return VaultOrder(
            maker=maker,
            base_token=chain.base_token,
            quote_token=chain.quote_token,
            side=side,
            price_quote=price_quote,
            amount_base=3 * BPC,
            max_fee_bps=25,
            nonce=7,
            expiry_unix=FAR_EXPIRY,
        )

    sell = order(seller, OrderSide.SELL, 2_500_001)
    buy = order(buyer, OrderSide.BUY, 2_600_000)
    signatures = [
        sign_order(seller_key, chain.chain_id, chain.vault.address, sell),
        sign_order(buyer_key, chain.chain_id, chain.vault.address, buy),
    ]
    assert recover_order_signer(chain.chain_id, chain.vault.address, sell, signatures[0]) == seller
    amount_base = 2 * BPC - 1
    fill = (0, 1, 10, 25, amount_base, sell.price_quote)  # makerIndex, takerIndex, fee bps, amount, price
    receipt = chain.vault.transact("settle", [sell.as_abi_tuple(), buy.as_abi_tuple()], signatures, [fill])

    (trade,) = chain.vault.contract.events.Trade().process_receipt(receipt, errors=DISCARD)
    expected = settlement_amounts(amount_base, sell.price_quote, 25, buy.max_fee_bps, 10, sell.max_fee_bps)
    assert bytes(trade["args"]["makerOrderHash"]) == order_hash(chain.chain_id, chain.vault.address, sell)
    assert bytes(trade["args"]["takerOrderHash"]) == order_hash(chain.chain_id, chain.vault.address, buy)
    assert (trade["args"]["quoteAmount"], trade["args"]["buyerFee"], trade["args"]["sellerFee"]) == (
        expected.quote,
        expected.buyer_fee,
        expected.seller_fee,
    )
    quote = chain.quote_token
    assert chain.vault.call("balanceOf", buyer, quote) == 10_000 * USD - expected.buyer_pays
    assert chain.vault.call("balanceOf", seller, quote) == 10_000 * USD + expected.seller_receives


def test_python_withdrawal_authorisation_is_accepted_once(fresh: VaultChain) -> None:
    chain = fresh
    keys = _keys(chain)
    trader = Account.from_key(keys[5]).address
    chain.open_account(trader, base_wei=10 * BPC, quote_units=USD)
    authorisation = WithdrawalAuthorisation(
        trader, chain.base_token, 4 * BPC, nonce=12, expiry_unix=FAR_EXPIRY
    )
    signature = sign_withdrawal(keys[0], chain.chain_id, chain.vault.address, authorisation)
    args = (chain.base_token, 4 * BPC, 12, FAR_EXPIRY, signature)
    chain.vault.transact("withdraw", *args, sender=trader)
    assert chain.vault.call("balanceOf", trader, chain.base_token) == 6 * BPC
    with pytest.raises(ContractReverted) as replay:
        chain.vault.transact("withdraw", *args, sender=trader)
    assert replay.value.error_name == "VaultWithdrawalNonceUsed"
    assert replay.value.error_args == {"account": trader, "nonce": 12}
