"""A contract bound to an address, whose calls and transactions raise domain errors.

Every web3 exception stops here: reverts become ``ContractReverted`` with the
custom error decoded, connection failures become ``ChainUnavailable``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from eth.abc import SignedTransactionAPI, StateAPI
from eth.chains.base import Chain
from eth.estimators.gas import binary_gas_search_intrinsic_tolerance
from eth.vm.spoof import SpoofTransaction
from eth_tester.backends.pyevm.main import PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.types import BlockIdentifier, TxParams, TxReceipt

from exchange.chain.errors import ChainUnavailable, ContractReverted, ErrorDecoder
from exchange.chain.senders import sending

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
            with sending(str(origin)):  # the nonce is chosen inside (exchange.chain.senders)
                tx_hash = fn.transact({"from": origin})
            return self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)

        receipt = self.guarded(send)
        if receipt["status"] != 1:
            # Gas estimation passed but execution failed: replay as a call for the reason.
            self.guarded(lambda: fn.call({"from": origin}, block_identifier=receipt["blockNumber"] - 1))
            raise ContractReverted("Unknown", {}, self.name, "0x")
        log.debug("chain.tx_mined", contract=self.name, function=function, gas_used=receipt["gasUsed"])
        return receipt

    def estimate_gas(self, transaction: TxParams) -> int:
        """Gas `transaction` needs; a revert raises ``ContractReverted`` as in :meth:`guarded`.

        A JSON-RPC node answers ``eth_estimateGas``. The embedded EVM would answer with py-evm's
        binary search, about 13 executions of the transaction between its intrinsic gas and the
        block gas limit, on the event loop's thread (the EVM is not thread-safe): a settlement of
        50 fills held the loop for about a second. Here it starts from the gas one execution uses
        instead (:func:`_estimate_from_gas_used`), two or three executions, for this call only.
        """
        chain = _embedded_chain(self.w3)
        if chain is None:
            return int(self.guarded(lambda: self.w3.eth.estimate_gas(transaction)))
        default = chain.gas_estimator
        chain.gas_estimator = _estimate_from_gas_used  # nothing else runs until it is put back
        try:
            return int(self.guarded(lambda: self.w3.eth.estimate_gas(transaction)))
        finally:
            chain.gas_estimator = default

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


def _embedded_chain(w3: Web3) -> Chain | None:
    """The py-evm chain behind an embedded-EVM ``Web3``; None for a JSON-RPC node."""
    provider = w3.provider
    if not isinstance(provider, EthereumTesterProvider) or provider.ethereum_tester is None:
        return None
    backend = provider.ethereum_tester.backend
    chain = backend.chain if isinstance(backend, PyEVMBackend) else None
    return chain if isinstance(chain, Chain) else None


# Raising the gas by 1/64 (the share a CALL keeps back) per call depth, plus a stipend.
_HEADROOM_STEPS = 3


def _estimate_from_gas_used(state: StateAPI, transaction: SignedTransactionAPI) -> int:
    """A py-evm gas estimator: the gas one run at the block gas limit uses, raised until it suffices.

    The run's gas before refunds is a lower bound; a CALL forwards only 63/64 of the gas left, so a
    limit that tight can fail, and each step adds 1/64. Only a limit the transaction succeeded with
    is returned; if none of the steps does, py-evm's default binary search answers. A run that
    fails at the block gas limit raises its error, as py-evm's estimators do.
    """
    snapshot = state.snapshot()
    try:
        computation = state.apply_transaction(
            SpoofTransaction(transaction, gas=state.gas_limit, gas_price=0)  # type: ignore[arg-type]
        )
        error = computation.error if computation.is_error else None
        candidate = state.gas_limit - computation.get_gas_remaining()
    finally:
        state.revert(snapshot)
    if error is not None:
        raise error
    for _ in range(_HEADROOM_STEPS):
        if candidate >= state.gas_limit:
            break
        if _succeeds(state, transaction, candidate):
            return candidate
        candidate += candidate // 63 + 2_300
    return int(binary_gas_search_intrinsic_tolerance(state, transaction))


def _succeeds(state: StateAPI, transaction: SignedTransactionAPI, gas: int) -> bool:
    snapshot = state.snapshot()
    try:
        return not state.apply_transaction(SpoofTransaction(transaction, gas=gas)).is_error  # type: ignore[arg-type]
    finally:
        state.revert(snapshot)


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
