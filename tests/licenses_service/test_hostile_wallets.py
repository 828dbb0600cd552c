"""A contract wallet that burns the gas it is given when asked about a signature (ERC-1271) costs
the service and its node no more than the gas cap, and counts as not having signed."""

from __future__ import annotations

import time
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from web3 import Web3
from web3.providers import BaseProvider
from web3.types import RPCEndpoint, RPCResponse

from exchange.chain.signatures import ERC1271_GAS_CAP, is_valid_signature
from tests.licenses_service.conftest import Service, account
from tests.licenses_service.test_certificates import certificate, codes, licensed_wallet, verify

# Asked with the node's whole gas allowance (the block's 30 million on the embedded chain), the
# wallet spins for half a minute; within the cap, for a fraction of a second.
QUICK_S = 8.0


async def test_a_wallet_that_burns_its_gas_has_not_signed(
    licensing: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = account(6)
    wallet, _ = licensed_wallet(licensing.pool, "ERC1271GasBurningWallet", owner.address)
    forwarded: list[int | None] = []
    call = licensing.w3.eth.call

    def recorded(transaction: Any, *args: Any, **kwargs: Any) -> Any:
        if transaction.get("to") == wallet.address:
            forwarded.append(transaction.get("gas"))
        return call(transaction, *args, **kwargs)

    monkeypatch.setattr(licensing.w3.eth, "call", recorded)
    cert = certificate(licensing, wallet.address)
    signature = owner.sign_message(cert.signable()).signature
    started = time.monotonic()
    result = await verify(
        licensing, {"certificate": cert.typed_data(), "signature": "0x" + bytes(signature).hex()}
    )
    elapsed = time.monotonic() - started
    assert codes(result) == ["signer_not_holder"], result  # licensed, but it vouched for nothing
    assert elapsed < QUICK_S
    assert forwarded == [ERC1271_GAS_CAP]


class _OutOfGasNode(BaseProvider):
    """A node that holds code at every address and answers every call as geth does when the
    call runs out of gas: a JSON-RPC error without revert data."""

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if method == "eth_chainId":
            return {"jsonrpc": "2.0", "id": 1, "result": "0x1"}
        if method == "eth_getCode":
            return {"jsonrpc": "2.0", "id": 1, "result": "0x6000"}
        if method == "eth_call":
            return {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "out of gas"}}
        raise AssertionError(f"unexpected request {method}")

    def is_connected(self, show_traceback: bool = False) -> bool:
        return True


def test_a_wallet_call_out_of_gas_on_a_geth_like_node_is_no_signature() -> None:
    message = encode_defunct(text="sign in")
    signature = Account.create().sign_message(message).signature
    wallet = Web3.to_checksum_address("0x" + "12" * 20)
    assert not is_valid_signature(Web3(_OutOfGasNode()), wallet, message, bytes(signature))
