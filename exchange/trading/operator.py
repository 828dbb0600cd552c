"""The operator's transactions: who signs, nonces, fees, broadcast and receipts (blocking web3).

The settlement pipeline writes a transaction down before it leaves the process, so
it wants the transaction's hash before broadcasting: with the operator's key
(``EXCHANGE_OPERATOR_PRIVATE_KEY``, or the embedded EVM's own test key) the
transaction is signed here and the hash is known up front. A node that signs for
its own unlocked account (a Hardhat node with ``EXCHANGE_DEV_ACCOUNTS``) tells the
hash only in its answer; the pipeline then relies on nonces and order states to
tell what happened (``exchange.trading.batching.batch_fate``).

Signing is deterministic (RFC 6979), so signing the same fields again gives the
same transaction and hash: a transaction that may or may not have reached the
node is simply sent again.

Broadcast refusals (``nonce too low``, ``already known``, ``replacement
underpriced``) are not errors here: they become ``BroadcastRefused`` and the
caller learns the truth from receipts and the account's mined nonce.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_utils.exceptions import ValidationError as EvmValidationError
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import TransactionNotFound, Web3RPCError
from web3.types import BlockIdentifier, Nonce, TxParams, TxReceipt, Wei

from exchange.trading.batching import Fees, suggested_fees


class BroadcastRefused(Exception):
    """The node did not take the transaction (the reason is the node's message)."""


@dataclass(frozen=True, slots=True)
class SignedTransaction:
    tx_hash: str
    raw: bytes


def operator_key(w3: Web3, private_key: str | None) -> LocalAccount | None:
    """The key that signs settlements: the configured one, the embedded EVM's, or None (the node signs)."""
    if private_key:
        account: LocalAccount = Account.from_key(private_key)
        return account
    if isinstance(w3.provider, EthereumTesterProvider) and w3.provider.ethereum_tester is not None:
        backend = w3.provider.ethereum_tester.backend
        wanted = str(w3.eth.default_account).lower()
        for key in backend.account_keys:
            candidate: LocalAccount = Account.from_key(bytes(key.to_bytes()))
            if candidate.address.lower() == wanted:
                return candidate
    return None


class OperatorTransactions:
    """Transactions from the operator account to one contract."""

    def __init__(self, w3: Web3, chain_id: int, key: LocalAccount | None) -> None:
        self.w3 = w3
        self.chain_id = chain_id
        self.key = key
        self.address = Web3.to_checksum_address(key.address if key else str(w3.eth.default_account))

    @property
    def signs_locally(self) -> bool:
        return self.key is not None

    def mined_nonce(self, block: BlockIdentifier = "latest") -> int:
        """Transactions of the operator mined by ``block``: the next nonce still unused there."""
        return int(self.w3.eth.get_transaction_count(self.address, block))

    def first_block_past(self, nonce: int, by: int) -> int:
        """The first block by which the operator's transaction of ``nonce`` was mined, knowing it
        was by block ``by`` (a binary search: about log2(by) requests)."""
        low, high = 0, by
        while low < high:
            middle = (low + high) // 2
            if self.mined_nonce(middle) > nonce:
                high = middle
            else:
                low = middle + 1
        return high

    def pending_nonce(self) -> int:
        """The next nonce counting transactions the node holds in its pool."""
        return int(self.w3.eth.get_transaction_count(self.address, "pending"))

    def head(self) -> int:
        return int(self.w3.eth.block_number)

    def fees(self) -> Fees:
        latest = self.w3.eth.get_block("latest")
        base_fee = int(latest.get("baseFeePerGas", 0) or 0)
        return suggested_fees(base_fee, int(self.w3.eth.max_priority_fee))

    def block_gas_limit(self) -> int:
        return int(self.w3.eth.get_block("latest")["gasLimit"])

    def transaction(self, to: str, data: bytes, *, nonce: int, gas: int, fees: Fees) -> TxParams:
        return {
            "from": self.address,
            "to": Web3.to_checksum_address(to),
            "data": HexBytes(data),
            "value": Wei(0),
            "nonce": Nonce(nonce),
            "gas": gas,
            "maxFeePerGas": Wei(fees.max_fee_per_gas_wei),
            "maxPriorityFeePerGas": Wei(fees.max_priority_fee_per_gas_wei),
            "chainId": self.chain_id,
            "type": 2,
        }

    def sign(self, tx: TxParams) -> SignedTransaction | None:
        """The signed transaction and its hash, or None when the node signs (hash known after sending)."""
        if self.key is None:
            return None
        fields: dict[str, Any] = {key: value for key, value in tx.items() if key != "from"}
        signed = self.key.sign_transaction(fields)
        return SignedTransaction("0x" + bytes(signed.hash).hex(), bytes(signed.raw_transaction))

    def broadcast(self, tx: TxParams, signed: SignedTransaction | None) -> str:
        """Hand the transaction to the node; its hash. Raises ``BroadcastRefused`` if the node says no."""
        try:
            if signed is not None:
                sent = self.w3.eth.send_raw_transaction(signed.raw)
            else:
                sent = self.w3.eth.send_transaction(tx)
        except (Web3RPCError, TesterValidationError, EvmValidationError, TransactionFailed) as exc:
            # The node answered, and said no (the embedded EVM raises its validation errors).
            raise BroadcastRefused(str(exc)) from exc
        return "0x" + bytes(sent).hex()

    def receipt(self, tx_hash: str) -> TxReceipt | None:
        return receipt_of(self.w3, tx_hash)

    def mined_call(self, nonce: int, block: int, to: str, data: bytes) -> tuple[str, TxReceipt] | None:
        """The hash and receipt of the operator's transaction of ``nonce`` in ``block`` when it is
        the call of ``to`` with ``data``; None when another transaction took the nonce."""
        for tx in self.w3.eth.get_block(block, full_transactions=True)["transactions"]:
            if not isinstance(tx, Mapping) or tx["from"] != self.address or int(tx["nonce"]) != nonce:
                continue
            if tx.get("to") != Web3.to_checksum_address(to) or bytes(tx["input"]) != data:
                return None
            tx_hash = "0x" + bytes(tx["hash"]).hex()
            receipt = self.receipt(tx_hash)
            return None if receipt is None else (tx_hash, receipt)
        return None

    def is_known(self, tx_hash: str) -> bool:
        """Whether the node has the transaction, in its pool or in a block."""
        try:
            self.w3.eth.get_transaction(HexBytes(tx_hash))
        except TransactionNotFound:
            return False
        return True


def receipt_of(w3: Web3, tx_hash: str) -> TxReceipt | None:
    """The receipt of ``tx_hash``, or None while it is not mined (or unknown to the node)."""
    try:
        return w3.eth.get_transaction_receipt(HexBytes(tx_hash))
    except TransactionNotFound:
        return None
