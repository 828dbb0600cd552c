"""Fills the Vault skipped in a mined batch: what ``FillSkipped`` says, and the failure it records.

``Vault.settle`` does not revert a batch for what a maker did to its own order after the
match: cancelled it (``cancelOrder``), raised its nonce floor past it
(``cancelOrdersBelowNonce``), requested an exit (``requestExit``) or, a contract wallet,
stopped accepting its signature (ERC-1271, asked with the wallet's whole
``WALLET_CHECK_GAS``). It skips each fill that uses such an order, moving nothing for it,
and emits ``FillSkipped(fillIndex, orderHash, reason)`` with the fill's position in the
batch. The settler fails those fills for good, as a fill the Vault refused
(``SKIPPED_ERROR`` with the reason), and settles the batch's others. Nothing on chain
records a wallet's refusal, so the service also cancels what rests of such an order
(``settlement_repository.disowned_orders``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from hexbytes import HexBytes
from web3.types import TxReceipt

from exchange.chain.binding import BoundContract

# The failure name of a skipped fill (``settlement_failures.error_name``): the Vault's event, not
# an error, since the batch did not revert.
SKIPPED_ERROR = "FillSkipped"


class SkipReason(IntEnum):
    """``IVault.SkipReason``, in the order of its declaration."""

    NONE = 0
    ORDER_CANCELLED = 1
    ORDER_NONCE_CANCELLED = 2
    ACCOUNT_EXITING = 3
    WALLET_REFUSED = 4


_WHY = {
    SkipReason.ORDER_CANCELLED: "maker cancelled the order on chain",
    SkipReason.ORDER_NONCE_CANCELLED: "maker cancelled its orders below a nonce on chain",
    SkipReason.ACCOUNT_EXITING: "maker requested an exit from the Vault",
    SkipReason.WALLET_REFUSED: "maker's wallet no longer approves the order",
}


@dataclass(frozen=True, slots=True)
class SkippedFill:
    """One ``FillSkipped``: the fill's index in the batch, the withdrawn order and how."""

    fill_index: int
    order_hash: str  # 0x-hex, lower case
    reason: SkipReason

    def failure_args(self) -> dict[str, Any]:
        """``settlement_failures.error_args`` of the fill (JSON)."""
        return {
            "orderHash": self.order_hash,
            "skipReason": self.reason.name,
            "reason": _WHY.get(self.reason, f"skip reason {int(self.reason)}"),
        }


def skipped_fills(vault: BoundContract, receipt: TxReceipt) -> dict[int, SkippedFill]:
    """The ``FillSkipped`` events of ``vault`` in a settlement receipt, by fill index."""
    event = vault.contract.events.FillSkipped
    topic = bytes(HexBytes(event.topic))
    skipped: dict[int, SkippedFill] = {}
    for entry in receipt["logs"]:
        if not entry["topics"] or entry["address"] != vault.address or bytes(entry["topics"][0]) != topic:
            continue
        args = event().process_log(entry)["args"]
        index = int(args["fillIndex"])
        skipped[index] = SkippedFill(
            index, "0x" + bytes(args["orderHash"]).hex(), SkipReason(int(args["reason"]))
        )
    return skipped


class SkipOutsideBatch(ValueError):
    """A ``FillSkipped`` names an index beyond the batch's fills (cannot be: the Vault reports
    indexes of the calldata the batch was sent with)."""


def skipped_by_fill(
    vault: BoundContract, receipt: TxReceipt, fill_ids: Sequence[int]
) -> dict[int, SkippedFill]:
    """The fills a batch's mined transaction skipped, by fill id: ``fill_ids`` are the batch's
    fills in their order in its calldata. ``SkipOutsideBatch`` for an index beyond them."""
    skipped: dict[int, SkippedFill] = {}
    for index, skip in skipped_fills(vault, receipt).items():
        if index >= len(fill_ids):
            raise SkipOutsideBatch(f"the Vault skipped fill {index} of {len(fill_ids)}")
        skipped[fill_ids[index]] = skip
    return skipped
