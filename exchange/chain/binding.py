"""A contract bound to an address, whose calls and transactions raise domain errors.

Every web3 exception stops here: reverts become ``ContractReverted`` with the
custom error decoded, connection failures become ``ChainUnavailable``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from eth_tester.exceptions import TransactionFailed
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.types import BlockIdentifier, TxReceipt

from exchange.chain.errors import ChainUnavailable, ContractReverted, ErrorDecoder

log = structlog.get_logger(__name__)
T = TypeVar("T")


class BoundContract:
    """One deployed contract: `call` for views, `transact` for state changes."""

    def __init__(
        self, w3: Web3, name: str, address: str, abi: list[dict[str, Any]], decoder: ErrorDecoder
    ) -> None:
        self.w3 = w3
        self.name = name
        self.address = Web3.to_checksum_address(address)
        self.contract: Contract = w3.eth.contract(address=self.address, abi=abi)
        self._decoder = decoder

    def call(self, function: str, *args: Any, block: BlockIdentifier = "latest") -> Any:
        """Call a view function at `block`."""
        fn = self.contract.get_function_by_name(function)(*args)
        return self.guarded(lambda: fn.call(block_identifier=block))

    def transact(
        self, function: str, *args: Any, sender: str | None = None, timeout_s: float = 120.0
    ) -> TxReceipt:
        """Send a transaction from `sender` (default: the operator) and wait for its receipt."""
        origin = Web3.to_checksum_address(sender) if sender else self.w3.eth.default_account
        fn = self.contract.get_function_by_name(function)(*args)

        def send() -> TxReceipt:
            tx_hash = fn.transact({"from": origin})
            return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)

        receipt = self.guarded(send)
        if receipt["status"] != 1:
            # Gas estimation passed but execution failed: replay as a call for the reason.
            self.guarded(lambda: fn.call({"from": origin}, block_identifier=receipt["blockNumber"] - 1))
            raise ContractReverted("Unknown", {}, self.name, "0x")
        log.debug("chain.tx_mined", contract=self.name, function=function, gas_used=receipt["gasUsed"])
        return receipt

    def guarded(self, action: Callable[[], T]) -> T:
        """Run a blocking web3 `action` against this contract with its errors made domain errors.

        For calls the two methods above do not cover (gas estimates, raw ``eth_call`` at a block):
        a revert becomes ``ContractReverted`` with this contract's custom error decoded, a
        connection failure or missing receipt becomes ``ChainUnavailable``.
        """
        try:
            return action()
        except ContractLogicError as exc:
            raise self._decoder.decode(_revert_data(exc), self.name) from exc
        except TransactionFailed as exc:  # the embedded EVM reports reverts of transactions this way
            raise self._decoder.decode(_tester_revert_data(exc), self.name) from exc
        except TimeExhausted as exc:
            raise ChainUnavailable(f"{self.name}: no receipt in time") from exc
        except OSError as exc:  # includes requests and socket errors
            raise ChainUnavailable(f"{self.name}: {exc}") from exc
        except Web3Exception as exc:
            raise ChainUnavailable(f"{self.name}: {exc}") from exc


def _revert_data(exc: ContractLogicError) -> str | None:
    data = exc.data
    if isinstance(data, str):
        return data
    if isinstance(data, dict):  # some nodes wrap it: {"data": "0x..."}
        inner = data.get("data")
        return inner if isinstance(inner, str) else None
    return None


def _tester_revert_data(exc: BaseException) -> bytes | None:
    """The raw revert bytes the embedded EVM attached somewhere in the exception chain."""
    current: BaseException | None = exc
    while current is not None:
        for arg in current.args:
            if isinstance(arg, bytes):
                return arg
            if isinstance(arg, str) and arg.startswith(_TESTER_PREFIX):
                # Calls carry only the repr of the bytes: "execution reverted: b'...'".
                literal = ast.literal_eval(arg[len(_TESTER_PREFIX) :])
                if isinstance(literal, bytes):
                    return literal
        current = current.__cause__ or current.__context__
    return None


_TESTER_PREFIX = "execution reverted: "
