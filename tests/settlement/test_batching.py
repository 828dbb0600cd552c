"""The pure parts of settlement: packing fills, a batch's fate from order states, fee bumps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.trading.batching import (
    MAX_TRANSACTION_GAS,
    WALLET_CALL_GAS,
    WALLET_FILL_GAS,
    BatchFate,
    Fees,
    FillToSettle,
    SignedOrder,
    batch_fate,
    contributions,
    gas_cap,
    gas_limit,
    pack,
    suggested_fees,
)
from exchange.trading.eip712 import OrderSide, VaultOrder

BASE = "0x" + "11" * 20
QUOTE = "0x" + "22" * 20


def signed(maker_byte: int, nonce: int, side: OrderSide) -> SignedOrder:
    order = VaultOrder(
        maker="0x" + f"{maker_byte:02x}" * 20,
        base_token=BASE,
        quote_token=QUOTE,
        side=side,
        price_quote=2 * 10**6,
        amount_base=10**18,
        max_fee_bps=30,
        nonce=nonce,
        expiry_unix=2**40,
    )
    return SignedOrder(order, bytes([maker_byte]) * 65, f"0x{maker_byte:02x}{nonce:062x}")


def fill(fill_id: int, maker: SignedOrder, taker: SignedOrder, amount: int) -> FillToSettle:
    return FillToSettle(fill_id, maker, taker, 10, 20, amount, 2 * 10**6)


def test_pack_lists_each_order_once_in_first_use_order_and_keeps_the_fills_in_order() -> None:
    resting = signed(0xA1, 1, OrderSide.SELL)
    first, second = signed(0xB2, 1, OrderSide.BUY), signed(0xC3, 1, OrderSide.BUY)
    packed = pack(
        [
            fill(7, resting, first, 5),
            fill(8, resting, second, 3),
            fill(9, signed(0xA1, 2, OrderSide.SELL), first, 1),
        ]
    )
    assert packed.fill_ids == (7, 8, 9)
    assert [order[0] for order in packed.orders] == [
        resting.order.maker,
        first.order.maker,
        second.order.maker,
        resting.order.maker,
    ]
    assert packed.signatures[1] == first.signature
    assert packed.fills == [
        (0, 1, 10, 20, 5, 2 * 10**6),
        (0, 2, 10, 20, 3, 2 * 10**6),
        (3, 1, 10, 20, 1, 2 * 10**6),
    ]


def test_a_batch_ran_when_every_order_moved_by_exactly_its_fills() -> None:
    maker, taker = signed(0xA1, 1, OrderSide.SELL), signed(0xB2, 1, OrderSide.BUY)
    added = contributions([fill(1, maker, taker, 5), fill(2, maker, taker, 2)])
    assert added == {maker.order_hash: 7, taker.order_hash: 7}
    before = {maker.order_hash: 3}
    assert batch_fate(before, added, {maker.order_hash: 10, taker.order_hash: 7}) is BatchFate.EXECUTED
    assert batch_fate(before, added, {maker.order_hash: 3, taker.order_hash: 0}) is BatchFate.NOT_EXECUTED
    # Half moved, or moved by something else: neither outcome, and the pipeline must stop.
    assert batch_fate(before, added, {maker.order_hash: 10, taker.order_hash: 0}) is BatchFate.INCONSISTENT
    assert batch_fate(before, added, {maker.order_hash: 17, taker.order_hash: 14}) is BatchFate.INCONSISTENT


@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=10**12),
    st.integers(10, 200),
)
def test_a_bump_raises_both_fee_caps_by_at_least_the_percentage_and_one_wei(
    max_fee: int, tip: int, percent: int
) -> None:
    bumped = Fees(max_fee, tip).bumped(percent)
    for old, new in ((max_fee, bumped.max_fee_per_gas_wei), (tip, bumped.max_priority_fee_per_gas_wei)):
        assert new >= old + 1
        assert new * 100 >= old * (100 + percent)
        assert new * 100 < old * (100 + percent) + 100 + 100  # rounded up by less than one wei (or the +1)


def test_suggested_fees_leave_room_for_the_base_fee_to_double_and_gas_has_a_margin() -> None:
    assert suggested_fees(7, 2) == Fees(16, 2)
    assert gas_limit(1000, 25) == 1250
    assert gas_limit(1001, 25) == 1252


def test_a_transaction_asks_for_at_most_a_blocks_gas_and_eip_7825s_cap() -> None:
    """The gas limit itself is never clipped (a clipped reserve would leave a late refusal short
    of gas): the settler cuts a batch shorter until its limit fits this."""
    assert gas_limit(29_000_000, 25) == 36_250_000
    assert gas_cap(30_000_000) == MAX_TRANSACTION_GAS == 2**24
    assert gas_cap(8_000_000) == 8_000_000


def test_the_gas_limit_leaves_each_wallet_order_room_for_the_wallets_whole_cap() -> None:
    """The Vault takes a wallet's refusal as the wallet's own (and skips its order's fills) only
    when it had 64/63 of the 500,000 cap and a cold call's cost (an EIP-7702 delegate's too)
    left to give it (``Vault.WALLET_CALL_GAS``, compared in test_wallet_refusals.py): each wallet
    order adds that to the limit, since a wallet cheap in the estimate may refuse when mined."""
    assert gas_limit(1000, 25, wallet_orders=2) == 1250 + 2 * WALLET_CALL_GAS


def test_the_gas_limit_leaves_each_fill_of_a_wallet_order_room_to_settle() -> None:
    """A wallet that refused in the simulation had its fills skipped there: the estimate holds
    none of their settling, which they need if the wallet accepts by the time the batch is mined."""
    assert gas_limit(1000, 25, wallet_orders=1, wallet_fills=40) == (
        1250 + WALLET_CALL_GAS + 40 * WALLET_FILL_GAS
    )


@pytest.mark.parametrize("percent", [0, 9])
def test_fee_bumps_below_ten_percent_are_still_at_least_one_wei(percent: int) -> None:
    assert Fees(0, 0).bumped(percent) == Fees(1, 1)
