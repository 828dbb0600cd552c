"""Gas estimates of ``Vault.settle`` on the embedded EVM (``BoundContract.estimate_gas``).

There the estimate starts from the gas of one run instead of py-evm's binary search; it must
still be a limit the settlement succeeds with, no higher than py-evm's answer, and a revert must
still arrive as the Vault's custom error. The settlement suite itself runs on a Hardhat node.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from hexbytes import HexBytes
from web3.logs import DISCARD
from web3.types import TxParams

from exchange.chain.errors import ContractReverted
from exchange.chain.provider import make_web3
from exchange.trading.eip712 import OrderSide, VaultOrder, sign_order
from tests.trading.vault_chain import VaultChain, deploy_vault_chain

BPC = 10**18
USD = 10**6
PRICE_QUOTE = 2 * USD
MAKERS = 3


@pytest.fixture(scope="module")
def chain() -> VaultChain:
    chain = deploy_vault_chain(make_web3())
    for key in _keys(chain)[: MAKERS + 1]:
        chain.open_account(Account.from_key(key).address, base_wei=100 * BPC, quote_units=10_000 * USD)
    return chain


def _keys(chain: VaultChain) -> list[bytes]:
    """Unlocked accounts of the embedded EVM, after the deployer's."""
    backend = chain.w3.provider.ethereum_tester.backend  # type: ignore[attr-defined]
    return [bytes(key.to_bytes()) for key in backend.account_keys[3:]]


def _py_evm(chain: VaultChain) -> Any:
    """The py-evm chain behind the embedded EVM, whose ``gas_estimator`` the estimate borrows."""
    return chain.w3.provider.ethereum_tester.backend.chain  # type: ignore[attr-defined]


def _settle_call(chain: VaultChain, *, above_limit: bool = False) -> tuple[TxParams, int]:
    """One taker buying 1 BPC from each maker; ``above_limit`` prices the fills above the taker's
    limit, which reverts the batch (a signature that is not the maker's no longer does: its
    order's fills are skipped)."""
    keys = _keys(chain)
    taker_key, maker_keys = keys[0], keys[1 : MAKERS + 1]

    def order(key: bytes, side: OrderSide, amount_base: int) -> tuple[VaultOrder, bytes]:
        vault_order = VaultOrder(
            maker=Account.from_key(key).address,
            base_token=chain.base_token,
            quote_token=chain.quote_token,
            side=side,
            price_quote=PRICE_QUOTE,
            amount_base=amount_base,
            max_fee_bps=30,
            nonce=1,
            expiry_unix=2**40,
        )
        return vault_order, sign_order(key, chain.chain_id, chain.vault.address, vault_order)

    signed = [
        order(taker_key, OrderSide.BUY, MAKERS * BPC),
        *(order(key, OrderSide.SELL, BPC) for key in maker_keys),
    ]
    price_quote = PRICE_QUOTE + USD if above_limit else PRICE_QUOTE
    fills = [(index + 1, 0, 10, 20, BPC, price_quote) for index in range(MAKERS)]
    function = chain.vault.contract.functions.settle(
        [o.as_abi_tuple() for o, _ in signed], [signature for _, signature in signed], fills
    )
    call: TxParams = {
        "from": chain.operator,
        "to": chain.vault.address,
        "data": HexBytes(function._encode_transaction_data()),
    }
    return call, len(fills)


def test_the_estimate_suffices_and_is_at_most_py_evms(chain: VaultChain) -> None:
    py_evm = _py_evm(chain)
    default_estimator = py_evm.gas_estimator
    call, fills = _settle_call(chain)
    by_binary_search = chain.w3.eth.estimate_gas(call)

    estimate = chain.vault.estimate_gas(call)

    assert py_evm.gas_estimator is default_estimator  # put back after the call
    assert by_binary_search - 21_000 <= estimate <= by_binary_search
    tx_hash = chain.w3.eth.send_transaction({**call, "gas": estimate})
    receipt = chain.w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    trades = chain.vault.contract.events.Trade().process_receipt(receipt, errors=DISCARD)
    assert len(trades) == fills


def test_a_revert_is_the_vaults_custom_error_as_without_the_shortcut(chain: VaultChain) -> None:
    py_evm = _py_evm(chain)
    default_estimator = py_evm.gas_estimator
    call, _ = _settle_call(chain, above_limit=True)
    with pytest.raises(ContractReverted) as by_binary_search:
        chain.vault.guarded(lambda: chain.w3.eth.estimate_gas(call))

    with pytest.raises(ContractReverted) as shortcut:
        chain.vault.estimate_gas(call)

    assert py_evm.gas_estimator is default_estimator
    assert shortcut.value.error_name == by_binary_search.value.error_name
    assert shortcut.value.error_args == by_binary_search.value.error_args
    assert shortcut.value.error_name == "VaultPriceOutsideLimit"
