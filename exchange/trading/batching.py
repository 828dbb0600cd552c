"""Settlement batches as values: packing fills into ``Vault.settle`` and reading what became of one.

Pure: no I/O. ``exchange.trading.settlement`` feeds it rows and the chain's answers.

Packing (``pack``): ``settle(orders, signatures, fills)`` takes every order a batch
refers to once, in first-use order, with its maker's signature, and fills that
point at orders by index. Fills keep their order: a fill may spend what an
earlier one delivered (a buyer selling on what it just bought).

A batch's fate from order states (``batch_fate``): a fill adds its base amount to
the filled amount of both its orders (``Vault.orderState(hash).filled``). With at
most one batch open at a time, every order of the open batch has, on chain,
either exactly what the already settled fills put there (the batch did not run)
or that plus what the batch carries (it ran), less the fills the Vault skipped
(an order its maker withdrew on chain), which its receipt names. Anything else
means the chain and the database disagree, and the pipeline stops rather than
guess. This decides a
batch whose transaction hash is unknown (a node that signs for itself answered
after the crash) and double-checks every other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from exchange.chain.signatures import ERC1271_GAS_CAP
from exchange.trading.eip712 import VaultOrder

OrderTuple = tuple[str, str, str, int, int, int, int, int, int]
FillTuple = tuple[int, int, int, int, int, int]
"""``IVault.Fill``: makerIndex, takerIndex, makerFeeBps, takerFeeBps, baseAmount, price."""

# The gas the Vault must have just before it asks a contract wallet for the wallet to get its
# whole WALLET_CHECK_GAS (``Vault.WALLET_CALL_GAS``, which a test compares with this): 64/63 of
# the cap (EIP-150), plus the call's cold access to the wallet, another to its delegate when the
# wallet is an account delegated under EIP-7702, and a few opcodes. A wallet's refusal skips its
# order's fills only then; with less, the batch reverts as short of gas.
_COLD_ACCOUNT_ACCESS_GAS = 2_600
WALLET_CALL_GAS = ERC1271_GAS_CAP * 64 // 63 + 2 * _COLD_ACCOUNT_ACCESS_GAS + 100
# A bound on the gas ``Vault.settle`` spends settling one fill beyond what skipping it costs. A
# wallet that refused when the batch was simulated had its order's fills skipped there, so the
# estimate holds none of their settling, and it may accept by the time the batch is mined: each
# fill of a wallet order is reserved this much. Measured: 27,700 a fill for a wallet's order
# taking 40 fresh makers' orders (tests/settlement/test_wallet_refusals.py: 790,000 estimated
# skipped, 1,897,000 settled). A fill that writes its two order states from zero (20,000 each)
# and two cold accounts (5,000 each) and emits its Trade (3,000) costs, counted by opcode, about
# 55,000 more, the most one fill can; 60,000 bounds it.
WALLET_FILL_GAS = 60_000


@dataclass(frozen=True, slots=True)
class SignedOrder:
    order: VaultOrder
    signature: bytes
    order_hash: str  # 0x-hex EIP-712 digest
    # Signed through its maker's contract wallet (ERC-1271), not by the maker's key: the Vault
    # gives the wallet up to its WALLET_CHECK_GAS to answer.
    wallet: bool = False


@dataclass(frozen=True, slots=True)
class FillToSettle:
    fill_id: int
    maker: SignedOrder
    taker: SignedOrder
    maker_fee_bps: int
    taker_fee_bps: int
    amount_base: int
    price_quote: int


@dataclass(frozen=True, slots=True)
class SettleArguments:
    """The three arguments of ``Vault.settle`` and which fill each entry of ``fills`` is."""

    orders: list[OrderTuple]
    signatures: list[bytes]
    fills: list[FillTuple]
    fill_ids: tuple[int, ...]


def pack(fills: Sequence[FillToSettle]) -> SettleArguments:
    """The ``settle`` arguments for `fills`, in their order; each order appears once."""
    index: dict[str, int] = {}
    orders: list[OrderTuple] = []
    signatures: list[bytes] = []

    def position(signed: SignedOrder) -> int:
        if signed.order_hash not in index:
            index[signed.order_hash] = len(orders)
            orders.append(signed.order.as_abi_tuple())
            signatures.append(signed.signature)
        return index[signed.order_hash]

    packed: list[FillTuple] = []
    for fill in fills:
        maker, taker = position(fill.maker), position(fill.taker)
        packed.append(
            (maker, taker, fill.maker_fee_bps, fill.taker_fee_bps, fill.amount_base, fill.price_quote)
        )
    return SettleArguments(orders, signatures, packed, tuple(fill.fill_id for fill in fills))


def contributions(fills: Sequence[FillToSettle]) -> dict[str, int]:
    """What `fills` add to each order's on-chain filled amount, by order hash."""
    added: dict[str, int] = defaultdict(int)
    for fill in fills:
        added[fill.maker.order_hash] += fill.amount_base
        added[fill.taker.order_hash] += fill.amount_base
    return dict(added)


class BatchFate(StrEnum):
    EXECUTED = "executed"
    NOT_EXECUTED = "not_executed"
    INCONSISTENT = "inconsistent"


def batch_fate(
    settled_before: Mapping[str, int], batch: Mapping[str, int], on_chain: Mapping[str, int]
) -> BatchFate:
    """Did the batch run? From each order's filled amount settled before it, in it, and on chain."""
    ran = all(on_chain[order] == settled_before.get(order, 0) + added for order, added in batch.items())
    if ran:
        return BatchFate.EXECUTED
    if all(on_chain[order] == settled_before.get(order, 0) for order in batch):
        return BatchFate.NOT_EXECUTED
    return BatchFate.INCONSISTENT


@dataclass(frozen=True, slots=True)
class Fees:
    """EIP-1559 fee caps of one transaction, in wei per gas."""

    max_fee_per_gas_wei: int
    max_priority_fee_per_gas_wei: int

    def bumped(self, percent: int) -> Fees:
        """Both caps raised by `percent` (rounded up, at least one wei): a valid replacement's fees."""

        def up(value: int) -> int:
            return max(value + 1, -(-value * (100 + percent) // 100))

        return Fees(up(self.max_fee_per_gas_wei), up(self.max_priority_fee_per_gas_wei))


def suggested_fees(base_fee_per_gas_wei: int, priority_fee_per_gas_wei: int) -> Fees:
    """Room for the base fee to double before the transaction is priced out."""
    return Fees(2 * base_fee_per_gas_wei + priority_fee_per_gas_wei, priority_fee_per_gas_wei)


# EIP-7825 (Osaka): a transaction may ask for at most 2^24 gas; a node refuses one above.
MAX_TRANSACTION_GAS = 16_777_216


def gas_limit(estimate: int, margin_percent: int, wallet_orders: int = 0, wallet_fills: int = 0) -> int:
    """The estimate plus a margin (state may move between estimate and inclusion), plus
    ``WALLET_CALL_GAS`` for each of the batch's ``wallet_orders`` (contract-wallet orders) and
    ``WALLET_FILL_GAS`` for each of its ``wallet_fills`` (fills that use one). A wallet that
    answered cheaply when the batch was estimated may refuse by the time it is mined (its owner
    withdrew the approval) or burn its whole cap: the Vault skips that order's fills only when it
    could give the wallet its whole cap, and reverts the batch otherwise. A wallet that refused
    then may accept once mined, and its fills, skipped in the estimate, settle. Only the gas used
    is paid for. Never clipped: a batch whose limit does not fit ``gas_cap`` is made shorter."""
    margin = -(-estimate * (100 + margin_percent) // 100)
    return margin + wallet_orders * WALLET_CALL_GAS + wallet_fills * WALLET_FILL_GAS


def gas_cap(block_gas_limit: int) -> int:
    """The most gas one transaction may ask for: a block's, and EIP-7825's cap."""
    return min(block_gas_limit, MAX_TRANSACTION_GAS)
