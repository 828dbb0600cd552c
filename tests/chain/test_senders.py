"""A sender's lock: one per account whatever the letter case, and a cancelled waiter takes nothing."""

from __future__ import annotations

import asyncio
import threading

from exchange.chain.errors import ChainUnavailable
from exchange.chain.senders import sender_lock, sending, sending_async

ACCOUNT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_one_lock_per_account_whatever_the_letter_case() -> None:
    assert sender_lock(ACCOUNT) is sender_lock(ACCOUNT.lower())
    assert sender_lock(ACCOUNT) is not sender_lock("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC")


async def test_a_waiter_cancelled_while_another_holds_the_lock_leaves_it_free() -> None:
    with sending(ACCOUNT):
        waiter = asyncio.create_task(_hold(ACCOUNT))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    assert not sender_lock(ACCOUNT).locked()
    await asyncio.wait_for(_hold(ACCOUNT), 1)
    assert not sender_lock(ACCOUNT).locked()


async def _hold(account: str) -> None:
    async with sending_async(account):
        await asyncio.sleep(0)


def test_a_thread_gives_up_after_its_wait_and_sends_nothing() -> None:
    outcome: list[BaseException] = []

    def send() -> None:
        try:
            with sending(ACCOUNT, wait_s=0.05):
                outcome.append(AssertionError("sent while another held the lock"))
        except ChainUnavailable as error:
            outcome.append(error)

    with sending(ACCOUNT):
        worker = threading.Thread(target=send)
        worker.start()
        worker.join(5)
    assert [type(error) for error in outcome] == [ChainUnavailable]
    assert not sender_lock(ACCOUNT).locked()
