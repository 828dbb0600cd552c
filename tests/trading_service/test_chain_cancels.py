"""Orders cancelled in the Vault itself, or whose maker asked to exit, leave the book (cause on_chain)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import func, select, update

from exchange.trading.chain_cancels import ChainCancellations
from exchange.trading.intents import WriterUnavailable
from exchange.trading.settlement_models import ChainEvent
from tests.chain.nodes import advance_time
from tests.support.auth import embedded_account
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price, vault_order


def _send(desk: Desk, account: LocalAccount, function: str, *args: Any) -> None:
    """``account`` calls the Vault itself, signing its own transaction (after being given gas money)."""
    w3 = desk.chain.w3
    if w3.eth.get_balance(account.address) < 10**17:
        w3.eth.wait_for_transaction_receipt(
            w3.eth.send_transaction({"from": w3.eth.default_account, "to": account.address, "value": 10**18})
        )
    vault = desk.chain.pool.vault.contract
    transaction = getattr(vault.functions, function)(*args).build_transaction(
        {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address)}
    )
    signed = account.sign_transaction(transaction)
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
    assert receipt["status"] == 1


async def _place(desk: Desk, trader: Trader, side: str, dollars: float, *, nonce: int) -> dict[str, Any]:
    body = desk.order_body(trader, side, price(dollars), WHOLE, nonce=nonce)
    reply = await desk.client.post("/v1/orders", json=body, headers=trader.headers)
    assert reply.status_code == 201, reply.text
    return {"body": body, "id": reply.json()["id"]}


async def _follow(desk: Desk) -> ChainCancellations:
    await desk.app.state.settlement.indexer.catch_up()
    cancels: ChainCancellations = desk.app.state.chain_cancels
    await cancels.apply()
    return cancels


async def test_vault_cancellations_and_exits_take_orders_off_the_book(desk: Desk) -> None:
    market = desk.market
    alice = await desk.member(0x81)
    bob = await desk.member(0x82)
    for trader in (alice, bob):
        await desk.deposit(trader, market["base"], 100 * WHOLE)
        await desk.deposit(trader, market["quote"], 10_000 * DOLLAR)
    single = await _place(desk, alice, "sell", 20, nonce=1_000_001)
    low = await _place(desk, alice, "sell", 21, nonce=1_000_002)
    high = await _place(desk, alice, "sell", 22, nonce=1_000_900)
    bobs = await _place(desk, bob, "buy", 5, nonce=1_000_003)
    await _follow(desk)  # nothing happened on chain yet
    for order in (single, low, high):
        assert (await desk.order(alice, order["id"]))["status"] == "open"

    _send(desk, alice.account, "cancelOrder", vault_order(single["body"]).as_abi_tuple())
    await _follow(desk)
    cancelled = await desk.order(alice, single["id"])
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("canceled", "on_chain")
    assert cancelled["reserved"] == "0"
    assert (await desk.order(alice, low["id"]))["status"] == "open"

    _send(desk, alice.account, "cancelOrdersBelowNonce", 1_000_100)
    await _follow(desk)
    assert (await desk.order(alice, low["id"]))["cancel_reason"] == "on_chain"
    assert (await desk.order(alice, high["id"]))["status"] == "open"  # its nonce is above the floor

    # The intake now refuses what the Vault would not settle.
    replay = await desk.client.post(
        "/v1/orders",
        json=desk.order_body(alice, "sell", price(23), WHOLE, nonce=1_000_050),
        headers=alice.headers,
    )
    assert replay.status_code == 409, replay.text
    assert replay.json()["type"].endswith("/cancelled-on-chain")

    _send(desk, bob.account, "requestExit")
    await _follow(desk)
    assert (await desk.order(bob, bobs["id"]))["cancel_reason"] == "on_chain"
    exiting = await desk.place(bob, "buy", price(4), WHOLE, nonce=1_000_005)
    assert exiting.status_code == 409, exiting.text
    assert "exit" in exiting.json()["detail"]
    assert (await desk.order(alice, high["id"]))["status"] == "open"  # another account's exit

    balances = await desk.balances(alice)
    assert balances[market["base"]]["reserved"] == WHOLE  # only the order still open holds base
    book = (await desk.client.get("/v1/markets/BPC-TUSD/orderbook")).json()
    assert (book["bids"], [level[0] for level in book["asks"]]) == ([], [str(price(22))])

    # A restarted follower reads every event again: nothing more leaves the book.
    again = ChainCancellations(
        desk.trading, desk.trading.sessionmaker, await desk.app.state.settlement.indexer.cursor_id()
    )
    assert await again.apply() == 0
    assert (await desk.order(alice, high["id"]))["status"] == "open"

    # Bob calls his exit off and trades again; a restart must not cancel his new orders.
    _send(desk, bob.account, "cancelExit")
    await _follow(desk)
    fresh = await _place(desk, bob, "buy", 6, nonce=1_000_004)
    restarted = ChainCancellations(
        desk.trading, desk.trading.sessionmaker, await desk.app.state.settlement.indexer.cursor_id()
    )
    assert await restarted.apply() == 0
    assert (await desk.order(bob, fresh["id"]))["status"] == "open"


async def test_a_pass_moves_past_the_events_it_does_not_follow(desk: Desk) -> None:
    """Deposits, trades and the Vault's other events are read once: the next pass starts after
    the newest event recorded, not after the last cancel or exit, however long ago that was."""
    carol = await desk.member(embedded_account(5))
    desk.deposit_quote_in_vault(carol, 100 * DOLLAR)
    cancels = await _follow(desk)
    async with desk.trading.sessionmaker() as session:
        recorded = (
            await session.execute(
                select(ChainEvent.name, func.max(ChainEvent.id))
                .where(ChainEvent.cursor_id == cancels.cursor_id)
                .group_by(ChainEvent.name)
            )
        ).all()
    assert "Deposited" in {name for name, _ in recorded}
    assert cancels.after_id == max(newest for _, newest in recorded)
    assert await cancels.apply() == 0


async def test_an_event_whose_block_comes_back_is_taken_in_then(desk: Desk) -> None:
    """A followed event orphaned by a reorganisation is passed over, but the next pass starts
    before it, however many events came after: when its block comes back (the indexer sets the
    same row back to seen), it is taken in."""
    alice = await desk.member(0x83)
    _send(desk, alice.account, "cancelOrdersBelowNonce", 1_000_100)
    carol = await desk.member(embedded_account(5))
    desk.deposit_quote_in_vault(carol, 100 * DOLLAR)  # events after it
    indexer = desk.app.state.settlement.indexer
    await indexer.catch_up()
    cancels = ChainCancellations(desk.trading, desk.trading.sessionmaker, await indexer.cursor_id())

    async def set_state(state: str) -> None:
        async with desk.trading.sessionmaker() as session, session.begin():
            await session.execute(
                update(ChainEvent)
                .where(ChainEvent.cursor_id == cancels.cursor_id, ChainEvent.name == "NonceCancelled")
                .values(state=state)
            )

    await set_state("orphaned")
    await cancels.apply()
    assert alice.address not in cancels.min_nonces
    await set_state("seen")
    await cancels.apply()
    assert cancels.min_nonces[alice.address] == 1_000_100


async def _exit_states(desk: Desk, account: str) -> list[str]:
    async with desk.trading.sessionmaker() as session:
        return list(
            await session.scalars(
                select(ChainEvent.state).where(
                    ChainEvent.name == "Exited", ChainEvent.args["account"].as_string() == account
                )
            )
        )


@pytest.mark.parametrize("writer_fails_once", [False, True])
async def test_an_exit_requested_and_paid_in_one_pass_takes_the_orders_off_first(
    desk: Desk, monkeypatch: pytest.MonkeyPatch, writer_fails_once: bool
) -> None:
    """With no exit delay, ``ExitRequested`` and ``Exited`` reach the indexer in one pass: the
    account's order leaves the book, releasing its reservation, before the payout is debited.
    A writer refusing the cancel fails the pass, crediting nothing; the next pass cancels and
    credits."""
    market = desk.market
    pool = desk.chain.pool
    carol = await desk.member(embedded_account(5))  # funded with ether: it sends transactions
    desk.deposit_quote_in_vault(carol, 100 * DOLLAR)
    await desk.app.state.settlement.indexer.catch_up()
    resting = await _place(desk, carol, "buy", 5, nonce=1_000_010)
    assert (await desk.balances(carol))[market["quote"]]["reserved"] > 0

    pool.vault.transact("setExitDelay", 0)
    pool.vault.transact("requestExit", sender=carol.address)
    pool.vault.transact("exit", sender=carol.address)
    indexer = desk.app.state.settlement.indexer
    if writer_fails_once:
        writer = desk.trading.market(market["id"]).writer
        submit = writer.submit

        async def refusing(intent: object) -> object:
            monkeypatch.setattr(writer, "submit", submit)  # once
            raise WriterUnavailable("the writer is rebuilding its book")

        monkeypatch.setattr(writer, "submit", refusing)
        with pytest.raises(WriterUnavailable):
            await indexer.catch_up()
        assert await _exit_states(desk, carol.address) == ["seen"]
        assert (await desk.order(carol, resting["id"]))["status"] == "open"
    await indexer.catch_up()  # one pass: both events, no separate follow-up

    assert (await desk.balances(carol))[market["quote"]] == {"total": 0, "available": 0, "reserved": 0}
    order = await desk.order(carol, resting["id"])
    assert (order["status"], order["cancel_reason"]) == ("canceled", "on_chain")
    assert await _exit_states(desk, carol.address) == ["credited"]


async def test_an_exit_with_a_fill_unsettled_is_credited_once_the_settler_has_failed_it(desk: Desk) -> None:
    """The escape hatch while a fill is pending: the Vault paid out without it, the ledger holds it.
    The exit waits (and with it every later event) until the settler fails the fill, which the Vault
    refuses for an exiting account, and voids it; then the debit matches the payout, to the unit."""
    market, pool = desk.market, desk.chain.pool
    settlement = desk.app.state.settlement
    alice, carol = await desk.funded_in_the_vault()
    before = {trader.address: await desk.balances(trader) for trader in (alice, carol)}
    await _place(desk, alice, "sell", 5, nonce=1_000_020)
    taken = desk.order_body(carol, "buy", price(5), WHOLE, nonce=1_000_021, time_in_force="IOC")
    assert (await desk.client.post("/v1/orders", json=taken, headers=carol.headers)).status_code == 201
    assert (await desk.balances(carol))[market["base"]]["total"] == WHOLE  # the fill, not settled

    pool.vault.transact("setExitDelay", 0)
    pool.vault.transact("requestExit", sender=carol.address)
    pool.vault.transact("exit", sender=carol.address)  # pays carol's 100 TUSD, no BPC
    desk.deposit_quote_in_vault(alice, 7 * DOLLAR)  # a later event: credited after the exit
    await settlement.indexer.catch_up()
    assert await _exit_states(desk, carol.address) == ["seen"]
    assert (await desk.balances(alice))[market["quote"]]["total"] > 0  # the fill's proceeds
    assert (await desk.balances(alice))[market["quote"]]["total"] < 7 * DOLLAR  # the deposit waits

    await settlement.settler.drain(poll_s=0.01, timeout_s=60)  # the Vault refuses the fill: failed, voided
    await settlement.indexer.catch_up()
    assert await _exit_states(desk, carol.address) == ["credited"]
    assert (await desk.balances(carol)) == {
        token: {"total": 0, "available": 0, "reserved": 0} for token in before[carol.address]
    }
    alice_after = await desk.balances(alice)
    assert alice_after[market["base"]] == before[alice.address][market["base"]]
    assert alice_after[market["quote"]]["total"] == 7 * DOLLAR
    assert (await settlement.audit()).clean


async def test_an_exit_called_off_after_its_payout_keeps_the_account_out_until_the_ledger_has_it(
    desk: Desk,
) -> None:
    """The Vault lets an account call ``cancelExit`` after ``exit`` paid it out. Until the exit is
    credited the ledger still holds what was paid: the account neither trades nor withdraws on it
    (else its fills would fail, and, kept unsettled, hold the exit and every later credit back)."""
    market, pool = desk.market, desk.chain.pool
    settlement = desk.app.state.settlement
    alice, carol = await desk.funded_in_the_vault()
    await _place(desk, alice, "sell", 5, nonce=1_000_030)
    taken = desk.order_body(carol, "buy", price(5), WHOLE, nonce=1_000_031, time_in_force="IOC")
    assert (await desk.client.post("/v1/orders", json=taken, headers=carol.headers)).status_code == 201

    pool.vault.transact("setExitDelay", 0)
    pool.vault.transact("requestExit", sender=carol.address)
    pool.vault.transact("exit", sender=carol.address)
    pool.vault.transact("cancelExit", sender=carol.address)
    await settlement.indexer.catch_up()
    assert await _exit_states(desk, carol.address) == ["seen"]  # the fill is unsettled: the exit waits
    assert (await desk.balances(carol))[market["quote"]]["available"] > 0  # what the Vault paid out

    refused = await desk.place(carol, "buy", price(5), WHOLE, nonce=1_000_032)
    assert refused.status_code == 409, refused.text
    assert "not yet debited" in refused.json()["detail"]
    withdrawal = await desk.withdraw(carol, market["quote"], DOLLAR)
    assert withdrawal.status_code == 409, withdrawal.text
    assert withdrawal.json()["type"].endswith("/account-exiting")

    await settlement.settler.drain(poll_s=0.01, timeout_s=60)  # the fill fails: carol had exited
    await settlement.indexer.catch_up()
    assert await _exit_states(desk, carol.address) == ["credited"]
    assert (await desk.balances(carol))[market["quote"]] == {"total": 0, "available": 0, "reserved": 0}
    desk.deposit_quote_in_vault(carol, 10 * DOLLAR)
    await settlement.indexer.catch_up()  # its pass takes in the credited exit: no hold, carol is back
    await _place(desk, carol, "buy", 4, nonce=1_000_033)
    assert (await settlement.audit()).clean


async def test_an_authorisation_an_exit_released_holds_the_account_until_its_expiry(desk: Desk) -> None:
    """An authorisation open at the exit stays valid in the Vault until its expiry, against money
    deposited after the exit: the account trades and withdraws again only once the credited chain
    time has passed it, so its use is debited from money nothing else has reserved."""
    market, pool, w3 = desk.market, desk.chain.pool, desk.chain.w3
    settlement = desk.app.state.settlement
    carol = await desk.member(embedded_account(4))
    desk.deposit_quote_in_vault(carol, 100 * DOLLAR)
    await settlement.indexer.catch_up()
    reply = await desk.withdraw(carol, market["quote"], 10 * DOLLAR)
    assert reply.status_code == 201, reply.text
    expiry = reply.json()["expiry"]
    pool.vault.transact("setExitDelay", 0)
    pool.vault.transact("requestExit", sender=carol.address)
    pool.vault.transact("exit", sender=carol.address)
    pool.vault.transact("cancelExit", sender=carol.address)
    desk.deposit_quote_in_vault(carol, 50 * DOLLAR)
    await settlement.indexer.catch_up()  # credits the exit (releasing the authorisation), then the deposit
    await settlement.indexer.catch_up()  # takes the credited exit in
    assert (await desk.balances(carol))[market["quote"]]["available"] == 50 * DOLLAR

    refused = await desk.place(carol, "buy", price(5), WHOLE, nonce=1_000_040)
    assert refused.status_code == 409, refused.text
    assert "stays valid in the Vault" in refused.json()["detail"]
    withdrawal = await desk.withdraw(carol, market["quote"], DOLLAR, key="after-the-hold")
    assert withdrawal.status_code == 409, withdrawal.text

    advance_time(w3, expiry - int(w3.eth.get_block("latest")["timestamp"]) + 1)
    desk.deposit_quote_in_vault(carol, DOLLAR)  # a block past the expiry, for the indexer to credit
    await settlement.indexer.catch_up()
    still = await desk.place(carol, "buy", price(5), WHOLE, nonce=1_000_042)
    assert still.status_code == 409, still.text  # the hold is judged before a pass credits
    await settlement.indexer.catch_up()  # the next pass finds the credited time past the expiry
    await _place(desk, carol, "buy", 5, nonce=1_000_041)
    # The refusal was not kept as the key's answer.
    retried = await desk.withdraw(carol, market["quote"], DOLLAR, key="after-the-hold")
    assert retried.status_code == 201, retried.text
    assert (await settlement.audit()).clean
