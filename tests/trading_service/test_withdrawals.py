"""Withdrawal requests: the operator's co-signature works in the Vault, and the amount is reserved."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from exchange.trading import eip712
from exchange.trading.models import TradingFill
from exchange.trading.withdrawal_expiry import release_expired_withdrawals
from tests.chain.nodes import advance_time
from tests.support.auth import embedded_account
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, price


async def test_withdrawal_is_co_signed_reserved_and_accepted_by_the_vault(desk: Desk) -> None:
    market = desk.market
    pool = desk.chain.pool
    trader = await desk.member(embedded_account(3))  # funded with ether: it sends transactions
    # Real custody: mint, approve and deposit on chain; the ledger is credited as the indexer would.
    desk.deposit_quote_in_vault(trader, 50 * DOLLAR)
    await desk.deposit(trader, market["quote"], 50 * DOLLAR)

    reply = await desk.client.post(
        "/v1/account/withdrawals",
        json={"token": market["quote"], "amount": str(20 * DOLLAR)},
        headers=trader.headers,
    )
    assert reply.status_code == 201, reply.text
    authorisation = reply.json()
    assert (authorisation["nonce"], authorisation["status"]) == (0, "authorised")
    expected = eip712.withdrawal_hash(
        market["chain_id"],
        market["vault"],
        eip712.WithdrawalAuthorisation(
            trader.address, market["quote"], 20 * DOLLAR, 0, authorisation["expiry"]
        ),
    )
    assert authorisation["digest"] == "0x" + expected.hex()
    assert (await desk.balances(trader))[market["quote"]] == {
        "total": 50 * DOLLAR,
        "available": 30 * DOLLAR,
        "reserved": 20 * DOLLAR,
    }

    signature = bytes.fromhex(authorisation["operator_signature"][2:])
    pool.vault.transact(
        "withdraw", market["quote"], 20 * DOLLAR, 0, authorisation["expiry"], signature, sender=trader.address
    )
    assert pool.vault.call("balanceOf", trader.address, market["quote"]) == 30 * DOLLAR


async def test_withdrawal_beyond_the_available_balance_is_refused_without_a_signature(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    market = desk.market
    trader = await desk.member(0x62)
    await desk.deposit(trader, market["quote"], 5 * DOLLAR)
    asked: list[object] = []
    monkeypatch.setattr(desk.trading, "_operator_signature", lambda *args: asked.append(args))
    for amount in (6 * DOLLAR, 2**256 - 1):
        reply = await desk.client.post(
            "/v1/account/withdrawals",
            json={"token": market["quote"], "amount": str(amount)},
            headers=trader.headers,
        )
        assert reply.status_code == 409, reply.text
        assert reply.json()["available"] == str(5 * DOLLAR)
    assert asked == []  # the operator is not asked to sign for money the account does not have
    assert reply.headers["content-type"] == "application/problem+json"
    assert "operator_signature" not in reply.text
    listed = await desk.client.get("/v1/account/withdrawals", headers=trader.headers)
    assert listed.json() == []
    assert (await desk.balances(trader))[market["quote"]]["reserved"] == 0


async def test_proceeds_of_unsettled_fills_are_not_withdrawn_before_they_settle(desk: Desk) -> None:
    """The Vault holds a fill's proceeds for the account only once the fill settles; a fill that
    fails is voided, taking them back, which a withdrawal reserving them would refuse."""
    market = desk.market
    alice, bob = await desk.member(0x65), await desk.member(0x66)
    await desk.deposit(alice, market["base"], 2 * WHOLE)
    await desk.deposit(bob, market["base"], WHOLE)
    await desk.deposit(bob, market["quote"], 100 * DOLLAR)
    assert (await desk.place(alice, "sell", price(5), WHOLE)).status_code == 201
    bought = await desk.place(bob, "buy", price(5), WHOLE, time_in_force="IOC")
    assert bought.status_code == 201, bought.text
    assert (await desk.balances(bob))[market["base"]]["available"] == 2 * WHOLE  # one of them unsettled

    refused = await desk.withdraw(bob, market["base"], 2 * WHOLE)
    assert refused.status_code == 409, refused.text
    assert "not yet settled" in refused.json()["detail"]
    assert refused.json()["unsettled"] == str(WHOLE)
    assert (await desk.withdraw(alice, market["quote"], DOLLAR)).status_code == 409  # her proceeds, too
    assert (await desk.balances(bob))[market["base"]]["reserved"] == 0
    assert (await desk.withdraw(bob, market["base"], WHOLE)).status_code == 201  # what was his before

    # Nothing of this is in the Vault: the settler fails the fill and voids it, which bob's
    # withdrawal of his own base leaves room for.
    await desk.app.state.settlement.settler.drain(poll_s=0.01, timeout_s=60)
    assert await _fill_states(desk) == ["failed"]
    assert (await desk.balances(bob))[market["base"]] == {"total": WHOLE, "available": 0, "reserved": WHOLE}
    assert (await desk.balances(alice))[market["base"]]["total"] == 2 * WHOLE


async def _fill_states(desk: Desk) -> list[str]:
    async with desk.trading.sessionmaker() as session:
        return list(await session.scalars(select(TradingFill.settlement_state).order_by(TradingFill.id)))


async def test_an_authorisation_past_its_expiry_gives_its_reservation_back(desk: Desk) -> None:
    market = desk.market
    trader = await desk.member(0x63)
    await desk.deposit(trader, market["quote"], 9 * DOLLAR)
    reply = await desk.client.post(
        "/v1/account/withdrawals",
        json={"token": market["quote"], "amount": str(4 * DOLLAR)},
        headers=trader.headers,
    )
    assert reply.status_code == 201, reply.text
    settlement = desk.app.state.settlement
    cursor_id = await settlement.indexer.cursor_id()

    async def sweep() -> int:
        await settlement.indexer.catch_up()
        return await release_expired_withdrawals(
            settlement.sessionmaker, desk.chain.w3, settlement.calls, cursor_id
        )

    assert await sweep() == 0  # still usable: nothing released
    assert (await desk.balances(trader))[market["quote"]]["reserved"] == 4 * DOLLAR

    latest = int(desk.chain.w3.eth.get_block("latest")["timestamp"])
    advance_time(desk.chain.w3, reply.json()["expiry"] - latest + 1)
    assert await sweep() == 1
    assert await sweep() == 0  # once
    assert (await desk.balances(trader))[market["quote"]] == {
        "total": 9 * DOLLAR,
        "available": 9 * DOLLAR,
        "reserved": 0,
    }
    listed = (await desk.client.get("/v1/account/withdrawals", headers=trader.headers)).json()
    items = listed["items"] if isinstance(listed, dict) else listed
    assert [item["status"] for item in items] == ["expired"]


async def test_an_exit_expires_the_open_authorisation_and_pays_out_the_whole_balance(desk: Desk) -> None:
    market = desk.market
    pool = desk.chain.pool
    settlement = desk.app.state.settlement
    trader = await desk.member(embedded_account(4))  # funded with ether: it sends transactions
    desk.deposit_quote_in_vault(trader, 1000 * DOLLAR)
    await settlement.indexer.catch_up()
    reply = await desk.client.post(
        "/v1/account/withdrawals",
        json={"token": market["quote"], "amount": str(10 * DOLLAR)},
        headers=trader.headers,
    )
    assert reply.status_code == 201, reply.text
    assert (await desk.balances(trader))[market["quote"]]["reserved"] == 10 * DOLLAR

    # A short exit delay (the council may set one) keeps the one-hour authorisation unexpired at the exit.
    pool.vault.transact("setExitDelay", 60)
    pool.vault.transact("requestExit", sender=trader.address)
    advance_time(desk.chain.w3, 61)
    pool.vault.transact("exit", sender=trader.address)
    assert int(desk.chain.w3.eth.get_block("latest")["timestamp"]) < reply.json()["expiry"]
    assert pool.vault.call("balanceOf", trader.address, market["quote"]) == 0
    await settlement.indexer.catch_up()

    assert (await desk.balances(trader))[market["quote"]] == {"total": 0, "available": 0, "reserved": 0}
    listed = (await desk.client.get("/v1/account/withdrawals", headers=trader.headers)).json()
    items = listed["items"] if isinstance(listed, dict) else listed
    assert [item["status"] for item in items] == ["expired"]
    cursor_id = await settlement.indexer.cursor_id()
    assert (
        await release_expired_withdrawals(settlement.sessionmaker, desk.chain.w3, settlement.calls, cursor_id)
        == 0
    )
    report = await settlement.audit()
    assert report.clean, "\n".join(report.lines())

    # The Vault still honours the authorisation until its expiry: paid from a new deposit, it is
    # listed as completed, with its transaction, and comes out of the available balance.
    desk.deposit_quote_in_vault(trader, 30 * DOLLAR)
    authorisation = reply.json()
    receipt = pool.vault.transact(
        "withdraw",
        market["quote"],
        10 * DOLLAR,
        authorisation["nonce"],
        authorisation["expiry"],
        bytes.fromhex(authorisation["operator_signature"][2:]),
        sender=trader.address,
    )
    await settlement.indexer.catch_up()
    assert (await desk.balances(trader))[market["quote"]] == {
        "total": 20 * DOLLAR,
        "available": 20 * DOLLAR,
        "reserved": 0,
    }
    listed = (await desk.client.get("/v1/account/withdrawals", headers=trader.headers)).json()
    items = listed["items"] if isinstance(listed, dict) else listed
    assert [(item["status"], item["tx_hash"]) for item in items] == [
        ("completed", "0x" + bytes(receipt["transactionHash"]).hex())
    ]
    report = await settlement.audit()
    assert report.clean, "\n".join(report.lines())


async def test_withdrawals_are_listed_newest_first_in_cursor_pages(desk: Desk) -> None:
    market = desk.market
    trader, other = await desk.member(0x63), await desk.member(0x64)
    for member in (trader, other):
        await desk.deposit(member, market["quote"], 50 * DOLLAR)
    for amount in range(1, 6):
        for member in (trader, other):
            reply = await desk.client.post(
                "/v1/account/withdrawals",
                json={"token": market["quote"], "amount": str(amount * DOLLAR)},
                headers=member.headers,
            )
            assert reply.status_code == 201, reply.text
    pages: list[list[str]] = []
    params: dict[str, object] = {"limit": 2}
    while True:
        reply = await desk.client.get("/v1/account/withdrawals", params=params, headers=trader.headers)
        assert reply.status_code == 200, reply.text
        page = reply.json()
        if not page:
            break
        assert {item["account"] for item in page} == {trader.address}
        pages.append([item["amount"] for item in page])
        params["cursor"] = page[-1]["id"]
    assert pages == [[str(5 * DOLLAR), str(4 * DOLLAR)], [str(3 * DOLLAR), str(2 * DOLLAR)], [str(DOLLAR)]]
