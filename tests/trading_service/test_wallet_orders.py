"""Orders of contract wallets (ERC-1271): the maker is the wallet, the signature whatever it accepts.

The wallet is asked (``isValidSignature`` on chain) when such an order is placed, as the Vault
asks it at settlement; orders signed by the maker's own key never cost a chain call.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from sqlalchemy import select

from exchange.auth.siwe import SiweMessage
from exchange.chain.errors import ChainUnavailable
from exchange.chain.pool import Tier
from exchange.chain.runtime import ChainRuntime
from exchange.chain.signatures import eip191_hash, wallet_accepts
from exchange.settings import Settings
from exchange.trading import eip712
from exchange.trading import service as service_module
from exchange.trading.models import TradingOrder
from exchange.trading.signing import MAX_SIGNATURE_BYTES
from tests.support.auth import embedded_account
from tests.support.wallets import deploy_multisig, deploy_wallet
from tests.trading_service.conftest import start_desk
from tests.trading_service.desk import DOLLAR, WHOLE, Desk, Trader, price, vault_order

OWNER = Account.from_key(b"\x81" * 32)
STRANGER = Account.from_key(b"\x83" * 32)


@pytest.fixture
def chain_calls(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The chain reads of code and of contract calls, as they are made: (what, the address read)."""
    calls: list[tuple[str, str]] = []
    eth = desk.chain.w3.eth
    for name in ("get_code", "call"):
        method = getattr(eth, name)

        def recorded(*args: Any, _name: str = name, _method: Any = method, **kwargs: Any) -> Any:
            target = args[0] if _name == "get_code" else args[0].get("to")
            calls.append((_name, str(target).lower()))
            return _method(*args, **kwargs)

        monkeypatch.setattr(eth, name, recorded)
    return calls


def _asked(calls: list[tuple[str, str]], trader: Trader) -> list[str]:
    """What of ``trader``'s address was read: its code, and calls to it."""
    return [name for name, target in calls if target == trader.address.lower()]


async def _stored_signatures(desk: Desk) -> list[str]:
    async with desk.trading.sessionmaker() as session:
        return list((await session.scalars(select(TradingOrder.signature).order_by(TradingOrder.id))).all())


async def _signed_in_wallet(
    desk: Desk, wallet: str, owner: LocalAccount, sign: Callable[[str], bytes]
) -> Trader:
    """``wallet`` signed in (its SIWE message signed by ``sign``, as the wallet accepts it), as a
    trader whose orders ``owner``'s key signs."""
    issued = (await desk.client.post("/v1/auth/nonce")).json()
    text = SiweMessage(
        domain=issued["domain"],
        address=wallet,
        statement="Sign in to the patent pool.",
        uri=f"http://{issued['domain']}/",
        chain_id=issued["chain_id"],
        nonce=issued["nonce"],
        issued_at=datetime.now(UTC).replace(microsecond=0),
    ).render()
    login = await desk.client.post(
        "/v1/auth/login", json={"message": text, "signature": "0x" + sign(text).hex()}
    )
    assert login.status_code == 200, login.text
    return Trader(owner, {"Authorization": f"Bearer {login.json()['access_token']}"}, wallet=wallet)


async def test_a_contract_wallet_trades_with_its_owners_signature(
    desk: Desk, chain_calls: list[tuple[str, str]]
) -> None:
    wallet = await desk.wallet_member(OWNER)
    bob = await desk.member(0x82)
    await desk.deposit(wallet, desk.market["base"], 10 * WHOLE)
    await desk.deposit(bob, desk.market["quote"], 1_000 * DOLLAR)
    chain_calls.clear()

    body = desk.order_body(wallet, "sell", price(12.5), 2 * WHOLE)
    assert body["order"]["maker"] == wallet.address != OWNER.address
    ask = await desk.client.post("/v1/orders", json=body, headers=wallet.headers)
    assert ask.status_code == 201, ask.text
    assert ask.json()["status"] == "open"
    assert _asked(chain_calls, wallet) == ["get_code", "call"]  # the wallet was asked

    chain_calls.clear()
    bid = await desk.place(bob, "buy", price(13), 2 * WHOLE, time_in_force="IOC")
    assert bid.status_code == 201, bid.text
    assert bid.json()["filled"] == str(2 * WHOLE)
    assert _asked(chain_calls, bob) == []  # a key's signature is checked without the chain

    # Kept as the wallet gave it: it is what the Vault hands the wallet at settlement.
    assert (await _stored_signatures(desk))[0] == body["signature"]
    balances = await desk.balances(wallet)
    assert balances[desk.market["base"]] == {"total": 8 * WHOLE, "available": 8 * WHOLE, "reserved": 0}
    assert balances[desk.market["quote"]]["total"] > 0
    trades = (await desk.client.get("/v1/account/trades", headers=wallet.headers)).json()["items"]
    assert [(t["side"], t["taker_or_maker"]) for t in trades] == [("sell", "maker")]


async def test_a_batch_asks_the_wallet_of_each_order_and_refuses_only_what_it_refuses(desk: Desk) -> None:
    wallet = await desk.wallet_member(OWNER)
    await desk.deposit(wallet, desk.market["base"], 10 * WHOLE)
    orders = [
        desk.order_body(wallet, "sell", price(20), WHOLE),
        desk.order_body(wallet, "sell", price(21), WHOLE, signer=STRANGER),
        desk.order_body(wallet, "sell", price(22), WHOLE),
    ]
    reply = await desk.client.post("/v1/orders/batch", json={"orders": orders}, headers=wallet.headers)
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [result["status"] for result in results] == [201, 422, 201]
    assert results[1]["problem"]["type"].endswith("/invalid-signature")
    assert "ERC-1271" in results[1]["problem"]["detail"]
    assert [order["price"] for order in await desk.orders(wallet)] == [str(price(22)), str(price(20))]


async def test_a_signature_the_wallet_does_not_accept_is_refused_and_changes_nothing(desk: Desk) -> None:
    wallet = await desk.wallet_member(OWNER)
    await desk.deposit(wallet, desk.market["quote"], 1_000 * DOLLAR)
    good = desk.order_body(wallet, "buy", price(10), WHOLE)
    refusals: list[tuple[dict[str, Any], int, str, str]] = [
        (
            desk.order_body(wallet, "buy", price(10), WHOLE, signer=STRANGER),
            422,
            "invalid-signature",
            f"nor does {wallet.address} accept it as a contract wallet (ERC-1271)",
        ),
        ({**good, "signature": "0x" + os.urandom(130).hex()}, 422, "invalid-signature", "65 bytes"),
        ({**good, "signature": "0x"}, 422, "invalid-signature", f"1 to {MAX_SIGNATURE_BYTES} bytes"),
        (
            {**good, "signature": "0x" + "ab" * (MAX_SIGNATURE_BYTES + 1)},
            422,
            "validation-failed",
            "at most",
        ),
    ]
    for body, status, problem, detail in refusals:
        reply = await desk.client.post("/v1/orders", json=body, headers=wallet.headers)
        assert reply.status_code == status, reply.text
        document = reply.json()
        assert document["type"].endswith("/" + problem), document
        assert detail in reply.text, document
    assert await desk.orders(wallet) == []
    assert all(balance["reserved"] == 0 for balance in (await desk.balances(wallet)).values())
    assert (await desk.journal())["sequence"] == 0


async def test_nobody_elses_wallet_is_asked(desk: Desk, chain_calls: list[tuple[str, str]]) -> None:
    """An order naming another member's wallet as maker is refused without a chain call, whatever
    its signature: the wallet might accept it, but the order is not the signed-in member's."""
    wallet = await desk.wallet_member(OWNER)
    mallory = await desk.member(0x84)
    chain_calls.clear()
    for signer in (OWNER, STRANGER):
        body = desk.order_body(wallet, "buy", price(10), WHOLE, signer=signer)
        reply = await desk.client.post("/v1/orders", json=body, headers=mallory.headers)
        assert reply.status_code == 422, reply.text
        assert reply.json()["type"].endswith("/invalid-signature")
    assert _asked(chain_calls, wallet) == []
    assert await desk.orders(Trader(mallory.account, mallory.headers)) == []


async def test_a_member_suspended_while_its_wallet_is_asked_places_nothing(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a node the wallet is asked from a worker thread: a suspension taken in meanwhile (its
    cancel-all already run) must still refuse the order, not let it rest after the cancel-all."""
    wallet = await desk.wallet_member(OWNER)
    await desk.deposit(wallet, desk.market["base"], 10 * WHOLE)

    def suspended_meanwhile(*args: Any, **kwargs: Any) -> bool:
        desk.chain.pool.suspend(wallet.address)
        desk.trading.membership.forget(wallet.address)
        return wallet_accepts(*args, **kwargs)

    monkeypatch.setattr(service_module, "wallet_accepts", suspended_meanwhile)
    reply = await desk.place(wallet, "sell", price(20), WHOLE)
    assert reply.status_code == 403, reply.text
    assert reply.json()["type"].endswith("/not-active-member")
    assert await desk.orders(wallet) == []


async def test_a_node_that_cannot_ask_the_wallet_answers_503_for_that_order_alone(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    wallet = await desk.wallet_member(OWNER)
    await desk.deposit(wallet, desk.market["base"], 10 * WHOLE)
    calls: list[int] = []

    def first_call_fails(*args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) in (1, 2):
            raise ChainUnavailable("the node did not answer")
        return wallet_accepts(*args, **kwargs)

    monkeypatch.setattr(service_module, "wallet_accepts", first_call_fails)
    single = await desk.place(wallet, "sell", price(20), WHOLE)
    assert single.status_code == 503, single.text
    assert single.json()["type"].endswith("/chain-unavailable")
    orders = [desk.order_body(wallet, "sell", price(price_usd), WHOLE) for price_usd in (21, 22)]
    reply = await desk.client.post("/v1/orders/batch", json={"orders": orders}, headers=wallet.headers)
    assert reply.status_code == 200, reply.text
    assert [result["status"] for result in reply.json()["results"]] == [503, 201]
    assert [order["price"] for order in await desk.orders(wallet)] == [str(price(22))]


async def test_a_multisig_wallets_long_signature_is_taken_and_kept_whole(desk: Desk) -> None:
    """A wallet whose signature is two owners' (130 bytes, as a Safe's): the order is placed with
    it, kept whole, and trades."""
    owners = sorted(
        (Account.from_key(b"\x85" * 32), Account.from_key(b"\x86" * 32)), key=lambda a: int(a.address, 16)
    )
    wallet = deploy_multisig(
        desk.chain.w3, [owner.address for owner in owners], sender=embedded_account(0).address
    )
    desk.chain.pool.admit(wallet.address, Tier.SMALL)
    member = await _signed_in_wallet(
        desk,
        wallet.address,
        owners[0],
        lambda text: b"".join(
            bytes(owner.sign_message(encode_defunct(text=text)).signature) for owner in owners
        ),
    )
    await desk.deposit(member, desk.market["base"], 10 * WHOLE)
    bob = await desk.member(0x87)
    await desk.deposit(bob, desk.market["quote"], 1_000 * DOLLAR)

    body = desk.order_body(member, "sell", price(12), WHOLE)
    order = vault_order(body)
    both = b"".join(
        eip712.sign_order(owner.key, desk.market["chain_id"], desk.market["vault"], order) for owner in owners
    )
    body["signature"] = "0x" + both.hex()
    for partial in (both[:65], both[65:]):  # one owner's alone is not the wallet's signature
        refused = await desk.client.post(
            "/v1/orders", json={**body, "signature": "0x" + partial.hex()}, headers=member.headers
        )
        assert refused.status_code == 422, refused.text
    ask = await desk.client.post("/v1/orders", json=body, headers=member.headers)
    assert ask.status_code == 201, ask.text
    assert len(both) == 130
    assert await _stored_signatures(desk) == [body["signature"]]
    bid = await desk.place(bob, "buy", price(12), WHOLE, time_in_force="IOC")
    assert bid.json()["filled"] == str(WHOLE)


async def test_a_suspension_taken_in_while_a_batchs_later_wallet_call_runs_places_nothing(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's orders are queued after every wallet call: a suspension taken in during the
    last call must refuse the orders whose calls came before it too."""
    wallet = await desk.wallet_member(OWNER)
    await desk.deposit(wallet, desk.market["base"], 10 * WHOLE)
    calls: list[int] = []

    def suspended_during_the_second(*args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) == 2:
            desk.chain.pool.suspend(wallet.address)
            desk.trading.membership.forget(wallet.address)
        return wallet_accepts(*args, **kwargs)

    monkeypatch.setattr(service_module, "wallet_accepts", suspended_during_the_second)
    orders = [desk.order_body(wallet, "sell", price(price_usd), WHOLE) for price_usd in (21, 22)]
    reply = await desk.client.post("/v1/orders/batch", json={"orders": orders}, headers=wallet.headers)
    assert reply.status_code == 403, reply.text
    assert reply.json()["type"].endswith("/not-active-member")
    assert await desk.orders(wallet) == []


async def _approving_wallet_member(desk: Desk) -> tuple[Trader, Callable[[bytes, bool], None]]:
    """A member that is an ``ERC1271ApprovingWallet`` (signed in, 10 BPC deposited), and how its
    owner approves a digest or withdraws the approval on chain."""
    owner = embedded_account(3)  # an account of the embedded chain: it sends the approvals
    wallet = deploy_wallet(
        desk.chain.w3, "ERC1271ApprovingWallet", owner.address, sender=embedded_account(0).address
    )
    desk.chain.pool.admit(wallet.address, Tier.SMALL)

    def approve(digest: bytes, approval: bool) -> None:
        sent = wallet.functions.setApproval(digest, approval).transact({"from": owner.address})
        assert desk.chain.w3.eth.wait_for_transaction_receipt(sent)["status"] == 1

    def sign_in(text: str) -> bytes:
        message = encode_defunct(text=text)
        approve(eip191_hash(message), True)
        return bytes(owner.sign_message(message).signature)

    member = await _signed_in_wallet(desk, wallet.address, owner, sign_in)
    await desk.deposit(member, desk.market["base"], 10 * WHOLE)
    return member, approve


async def _approved_order(
    desk: Desk, member: Trader, approve: Callable[[bytes, bool], None], ticks: float
) -> tuple[dict[str, Any], bytes]:
    """A sell of 1 BPC at ``ticks`` the wallet approves: its body and digest."""
    body = desk.order_body(member, "sell", price(ticks), WHOLE)
    digest = eip712.order_hash(desk.market["chain_id"], desk.market["vault"], vault_order(body))
    approve(digest, True)
    return body, digest


async def test_a_resent_wallet_order_is_answered_after_the_wallet_withdrew_its_approval(desk: Desk) -> None:
    """A resend (same client order id, same signed order) answers the order placed, 200, as for a
    key's order, although the wallet no longer accepts the signature."""
    member, approve = await _approving_wallet_member(desk)
    body, digest = await _approved_order(desk, member, approve, 12)
    placed = await desk.client.post("/v1/orders", json=body, headers=member.headers)
    assert placed.status_code == 201, placed.text
    approve(digest, False)

    resent = await desk.client.post("/v1/orders", json=body, headers=member.headers)
    assert resent.status_code == 200, resent.text
    assert resent.json()["id"] == placed.json()["id"]
    other = desk.order_body(member, "sell", price(13), WHOLE)  # a new order the wallet never approved
    refused = await desk.client.post("/v1/orders", json=other, headers=member.headers)
    assert refused.status_code == 422, refused.text


async def test_the_recheck_cancels_a_resting_wallet_order_its_wallet_no_longer_accepts(
    desk: Desk, chain_calls: list[tuple[str, str]]
) -> None:
    """Before one of its fills fails: the order leaves the book with ``wallet_refused`` and its
    reservation is released; an order its wallet still accepts, and a key's order, stay."""
    member, approve = await _approving_wallet_member(desk)
    withdrawn, digest = await _approved_order(desk, member, approve, 12)
    kept, _ = await _approved_order(desk, member, approve, 13)
    for body in (withdrawn, kept):
        placed = await desk.client.post("/v1/orders", json=body, headers=member.headers)
        assert placed.status_code == 201, placed.text
    bob = await desk.member(0x82)
    await desk.deposit(bob, desk.market["base"], 10 * WHOLE)
    assert (await desk.place(bob, "sell", price(14), WHOLE)).status_code == 201

    assert await desk.trading.recheck_wallet_orders() == 0  # every signature still holds
    approve(digest, False)
    assert await desk.trading.recheck_wallet_orders() == 0  # refused once: the next check decides
    chain_calls.clear()
    assert await desk.trading.recheck_wallet_orders() == 1
    assert _asked(chain_calls, bob) == []  # a key's order costs no chain call
    assert _asked(chain_calls, member) == ["get_code", "call", "get_code", "call"]

    orders = {order["client_order_id"]: order for order in await desk.orders(member)}
    assert orders[withdrawn["client_order_id"]]["status"] == "canceled"
    assert orders[withdrawn["client_order_id"]]["cancel_reason"] == "wallet_refused"
    assert orders[kept["client_order_id"]]["status"] == "open"
    assert [order["status"] for order in await desk.orders(bob)] == ["open"]
    base = (await desk.balances(member))[desk.market["base"]]
    assert base == {"total": 10 * WHOLE, "available": 9 * WHOLE, "reserved": WHOLE}  # the kept order's

    chain_calls.clear()
    assert await desk.trading.recheck_wallet_orders() == 0  # nothing left to cancel
    assert _asked(chain_calls, member) == ["get_code", "call"]  # the kept order alone


async def test_the_service_rechecks_wallet_orders_on_its_own(
    settings: Settings, chain_runtime: ChainRuntime
) -> None:
    """With ``trading_wallet_recheck_s`` set, a withdrawn approval cancels the order within it."""
    async for desk in start_desk(
        settings.model_copy(update={"trading_wallet_recheck_s": 0.05}), chain_runtime
    ):
        member, approve = await _approving_wallet_member(desk)
        body, digest = await _approved_order(desk, member, approve, 12)
        placed = await desk.client.post("/v1/orders", json=body, headers=member.headers)
        assert placed.status_code == 201, placed.text
        approve(digest, False)
        deadline = asyncio.get_running_loop().time() + 10
        while (order := (await desk.orders(member))[0])["status"] == "open":
            assert asyncio.get_running_loop().time() < deadline, "the order was never rechecked"
            await asyncio.sleep(0.05)
        assert (order["status"], order["cancel_reason"]) == ("canceled", "wallet_refused")


async def test_a_wallet_the_node_cannot_ask_is_skipped_and_three_in_a_row_end_the_check(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    member, approve = await _approving_wallet_member(desk)
    digests = []
    for ticks in (12, 13, 14):
        body, digest = await _approved_order(desk, member, approve, ticks)
        assert (await desk.client.post("/v1/orders", json=body, headers=member.headers)).status_code == 201
        digests.append(digest)
    approve(digests[0], False)
    assert await desk.trading.recheck_wallet_orders() == 0  # the first refusal of digests[0]
    asked: list[bytes] = []

    def unreachable_once(w3: Any, wallet: str, digest: bytes, signature: bytes) -> bool:
        asked.append(digest)
        if len(asked) == 1:
            raise ChainUnavailable("the node did not answer")
        return wallet_accepts(w3, wallet, digest, signature)

    monkeypatch.setattr(service_module, "wallet_accepts", unreachable_once)
    assert await desk.trading.recheck_wallet_orders() == 0  # digests[0] skipped, the others asked
    assert asked == digests
    assert await desk.trading.recheck_wallet_orders() == 1  # refused again: the skip kept its mark
    statuses = [order["status"] for order in reversed(await desk.orders(member))]
    assert statuses == ["canceled", "open", "open"]

    def unreachable(*args: Any, **kwargs: Any) -> bool:
        raise ChainUnavailable("the node did not answer")

    monkeypatch.setattr(service_module, "wallet_accepts", wallet_accepts)
    body, digest = await _approved_order(desk, member, approve, 15)
    assert (await desk.client.post("/v1/orders", json=body, headers=member.headers)).status_code == 201
    monkeypatch.setattr(service_module, "wallet_accepts", unreachable)
    with pytest.raises(ChainUnavailable):  # three wallets in a row the node cannot ask
        await desk.trading.recheck_wallet_orders()
    assert [order["status"] for order in await desk.orders(member)].count("open") == 3


async def test_a_wallet_that_approves_again_before_the_second_check_keeps_its_order(desk: Desk) -> None:
    member, approve = await _approving_wallet_member(desk)
    body, digest = await _approved_order(desk, member, approve, 12)
    assert (await desk.client.post("/v1/orders", json=body, headers=member.headers)).status_code == 201
    approve(digest, False)
    assert await desk.trading.recheck_wallet_orders() == 0
    approve(digest, True)
    assert await desk.trading.recheck_wallet_orders() == 0
    approve(digest, False)
    assert await desk.trading.recheck_wallet_orders() == 0  # a refusal after an acceptance starts again
    assert [order["status"] for order in await desk.orders(member)] == ["open"]
    assert await desk.trading.recheck_wallet_orders() == 1
