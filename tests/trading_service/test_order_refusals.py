"""Bad orders are refused with a clear problem document, and change nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from eth_account import Account

from exchange.trading.service import TradingService
from tests.support.addresses import mistyped
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price

PROBLEM = "application/problem+json"


async def _funded(desk: Desk) -> Trader:
    trader = await desk.member(0x71)
    await desk.deposit(trader, desk.market["base"], 10 * WHOLE)
    await desk.deposit(trader, desk.market["quote"], 1_000 * DOLLAR)
    return trader


async def _nothing_changed(desk: Desk, trader: Trader) -> None:
    assert await desk.orders(trader) == []
    balances = await desk.balances(trader)
    assert all(balance["reserved"] == 0 for balance in balances.values())
    head = await desk.journal()
    assert head["sequence"] == 0


def _tamper(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**body, **changes}


REFUSALS: list[tuple[str, int, str]] = [
    ("short_signature", 422, "invalid-signature"),
    ("not_hex_signature", 422, "validation-failed"),
    ("high_s_signature", 422, "invalid-signature"),
    ("bad_v_signature", 422, "invalid-signature"),
    ("other_signer", 422, "invalid-signature"),
    ("field_changed_after_signing", 422, "invalid-signature"),
    ("wrong_chain", 422, "wrong-signing-domain"),
    ("wrong_vault", 422, "wrong-signing-domain"),
    ("signed_for_other_chain", 422, "invalid-signature"),
    ("expired", 422, "order-expired"),
    ("expires_within_margin", 422, "order-expired"),
    ("amount_off_lot", 422, "order-refused"),
    ("amount_below_minimum", 422, "order-refused"),
    ("price_off_tick", 422, "order-refused"),
    ("price_zero", 422, "order-refused"),
    ("fee_cap_below_fees", 422, "order-refused"),
    ("other_tokens", 422, "order-refused"),
    ("unknown_market", 404, "unknown-market"),
    ("someone_elses_order", 403, "not-order-maker"),
    ("insufficient_funds", 409, "insufficient-balance"),
    ("uint256_overflow", 422, "order-refused"),
    ("extra_field", 422, "validation-failed"),
    ("fee_cap_as_string", 422, "validation-failed"),
    ("expiry_as_float", 422, "validation-failed"),
    ("chain_id_as_string", 422, "validation-failed"),
    ("maker_checksum_mistyped", 422, "validation-failed"),
]


async def test_refused_orders_change_nothing(desk: Desk) -> None:
    """One service, every refusal in turn: each answers its problem and leaves no trace."""
    trader = await _funded(desk)
    market = desk.market
    good = desk.order_body(trader, "buy", price(10), WHOLE)
    signature = good["signature"]
    now = int(time.time())
    bodies: dict[str, dict[str, Any]] = {
        "short_signature": _tamper(good, signature=signature[:-2]),
        "not_hex_signature": _tamper(good, signature="0x" + "zz" * 65),
        "high_s_signature": _tamper(
            good,
            signature="0x"
            + signature[2:66]
            + (
                0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
                - int(signature[66:130], 16)
            )
            .to_bytes(32, "big")
            .hex()
            + ("1c" if signature[130:] == "1b" else "1b"),
        ),
        "bad_v_signature": _tamper(good, signature=signature[:-2] + "05"),
        "other_signer": desk.order_body(
            trader, "buy", price(10), WHOLE, signer=Account.from_key(b"\x99" * 32)
        ),
        "field_changed_after_signing": _tamper(good, order={**good["order"], "amount": str(2 * WHOLE)}),
        "wrong_chain": desk.order_body(trader, "buy", price(10), WHOLE, chain_id=market["chain_id"] + 1),
        "wrong_vault": desk.order_body(trader, "buy", price(10), WHOLE, vault="0x" + "11" * 20),
        "signed_for_other_chain": desk.order_body(
            trader, "buy", price(10), WHOLE, sign_chain_id=market["chain_id"] + 1
        ),
        "expired": desk.order_body(trader, "buy", price(10), WHOLE, expiry=now - 1),
        "expires_within_margin": desk.order_body(trader, "buy", price(10), WHOLE, expiry=now + 5),
        "amount_off_lot": desk.order_body(trader, "buy", price(10), WHOLE + 1),
        "amount_below_minimum": desk.order_body(trader, "buy", price(10), 10**15),
        "price_off_tick": desk.order_body(trader, "buy", price(10) + 1, WHOLE),
        "price_zero": desk.order_body(trader, "buy", 0, WHOLE),
        "fee_cap_below_fees": desk.order_body(trader, "buy", price(10), WHOLE, max_fee_bps=19),
        "other_tokens": _tamper(good, order={**good["order"], "base_token": market["quote"]}),
        "unknown_market": _tamper(good, market="ETH-USD"),
        "someone_elses_order": desk.order_body(
            Trader(Account.from_key(b"\x98" * 32), {}), "buy", price(10), WHOLE
        ),
        "insufficient_funds": desk.order_body(trader, "buy", price(10), 1_000 * WHOLE),
        "uint256_overflow": _tamper(good, order={**good["order"], "amount": "9" * 78}),
        "extra_field": _tamper(good, fee_bps=0),
        # Integers as the schema says, not whatever converts to one (a price or an amount is a
        # decimal string, and a number there is refused too).
        "fee_cap_as_string": _tamper(
            good, order={**good["order"], "max_fee_bps": str(good["order"]["max_fee_bps"])}
        ),
        "expiry_as_float": _tamper(good, order={**good["order"], "expiry": float(good["order"]["expiry"])}),
        "chain_id_as_string": _tamper(good, chain_id=str(good["chain_id"])),
        "maker_checksum_mistyped": _tamper(
            good, order={**good["order"], "maker": mistyped(good["order"]["maker"])}
        ),
    }
    assert set(bodies) == {case for case, _, _ in REFUSALS}
    for case, status, problem in REFUSALS:
        reply = await desk.client.post("/v1/orders", json=bodies[case], headers=trader.headers)
        assert reply.status_code == status, (case, reply.text)
        assert reply.headers["content-type"] == PROBLEM
        document = reply.json()
        assert document["type"].endswith("/" + problem), case
        assert document["status"] == status
        assert document["detail"]
        if case == "maker_checksum_mistyped":
            assert "EIP-55 checksum" in document["detail"] + str(document.get("errors")), document
        if problem == "wrong-signing-domain":  # the field that differs from the market's
            assert document["field"] == {"wrong_chain": "chain_id", "wrong_vault": "vault"}[case]
        await _nothing_changed(desk, trader)


async def test_non_members_may_not_trade(desk: Desk) -> None:
    outsider = await desk.member(0x72, admit=False)
    await desk.deposit(outsider, desk.market["quote"], 100 * DOLLAR)
    reply = await desk.place(outsider, "buy", price(10), WHOLE)
    assert reply.status_code == 403, reply.text
    assert reply.json()["type"].endswith("/not-active-member")
    await _nothing_changed(desk, outsider)


async def test_orders_need_a_session(desk: Desk) -> None:
    trader = await _funded(desk)
    body = desk.order_body(trader, "buy", price(10), WHOLE)
    reply = await desk.client.post("/v1/orders", json=body)
    assert reply.status_code == 401
    assert reply.headers["content-type"] == PROBLEM
    await _nothing_changed(desk, trader)


async def test_post_only_that_would_take_is_refused(desk: Desk) -> None:
    trader = await _funded(desk)
    other = await desk.member(0x73)
    await desk.deposit(other, desk.market["base"], 5 * WHOLE)
    assert (await desk.place(other, "sell", price(10), WHOLE)).status_code == 201
    reply = await desk.place(trader, "buy", price(10), WHOLE, time_in_force="PO")
    assert reply.status_code == 409, reply.text
    assert reply.json()["type"].endswith("/post-only-would-take")
    await _nothing_changed_for_orders(desk, trader)


async def _nothing_changed_for_orders(desk: Desk, trader: Trader) -> None:
    assert (await desk.client.get("/v1/orders", headers=trader.headers)).json()["items"] == []
    assert all(balance["reserved"] == 0 for balance in (await desk.balances(trader)).values())


async def test_an_order_that_waited_past_its_time_to_leave_the_book_is_refused_not_matched(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Intake found more than the expiry margin left; by the time the writer took the order (a
    slow chain call in between), less was: it must not trade with less than the margin to settle."""
    seller, buyer = await desk.member(0xD1), await desk.member(0xD2)
    await desk.deposit(seller, desk.market["base"], 5 * WHOLE)
    await desk.deposit(buyer, desk.market["quote"], 100 * DOLLAR)
    ask = await desk.place(seller, "sell", price(20), WHOLE)
    assert ask.status_code == 201, ask.text
    admit = TradingService._admit

    async def slow(self: TradingService, account: str, checked: Any) -> None:  # a slow chain read
        await admit(self, account, checked)
        await asyncio.sleep(2.5)

    monkeypatch.setattr(TradingService, "_admit", slow)
    head, balances = await desk.journal(), await desk.balances(buyer)
    margin = desk.trading.settings.trading_expiry_margin_s
    for replacing in (False, True):
        # Intake lets it pass for at least a second (whole seconds: the truncation leaves 1 to 2);
        # the writer, 2.5 s later, finds the margin gone.
        expiry = int(time.time()) + margin + 2
        late = await (
            desk.replace(seller, ask.json()["id"], "sell", price(21), WHOLE, expiry=expiry)
            if replacing
            else desk.place(buyer, "buy", price(20), WHOLE, expiry=expiry)
        )
        assert late.status_code == 422, late.text
        assert late.json()["type"].endswith("/order-expired")
        assert "had to leave the book" in late.json()["detail"]
    assert await desk.journal() == head
    assert await desk.balances(buyer) == balances
    assert (await desk.order(seller, ask.json()["id"]))["status"] == "open"
