"""One sender's transactions leave this process one at a time.

A transaction's nonce is the sender's pending count at the node (web3 asks it for
a locally signed transaction, the node assigns it to one it signs, and the
settler asks it for its batches). Two parts of one process sending from the same
account at once, say the settler's batch and a foundation transaction, both from
the operator by default, could both read the same count before either
transaction reached the node: one of them is then refused (``nonce too low``) or,
on a network with a mempool, replaces the other. So a sender's lock is held from
choosing the nonce until the node has accepted the transaction: the second
sender then reads a count that includes the first's transaction.

The lock is per process. Another process sending from the same account (an
``exchange settle`` beside ``exchange serve``) still races: give it an account of
its own, as the README says.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator

from exchange.chain.errors import ChainUnavailable

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_POLL_S = 0.005


def sender_lock(address: str) -> threading.Lock:
    """The lock of ``address`` (any letter case) in this process."""
    key = address.lower()
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


SENDER_WAIT_S = 5.0
"""How long a thread waits for another sender of the same account. The settler holds the lock
across writing its batch down, which on SQLite waits for the database's write lock; a request
that holds that write lock while it sends (a membership change) gives up after this long
instead of waiting for a settler that waits for it."""


@contextlib.contextmanager
def sending(address: str, wait_s: float = SENDER_WAIT_S) -> Iterator[None]:
    """Hold ``address``'s lock for the block, blocking this thread while another holds it, for
    at most ``wait_s`` (then ``ChainUnavailable``: nothing was sent)."""
    lock = sender_lock(address)
    if not lock.acquire(timeout=wait_s):
        raise ChainUnavailable(
            f"another transaction of {address} was being sent for over {wait_s:g} s: nothing was sent, retry"
        )
    try:
        yield
    finally:
        lock.release()


@contextlib.asynccontextmanager
async def sending_async(address: str) -> AsyncIterator[None]:
    """Hold ``address``'s lock for the block without blocking the event loop while waiting.

    The lock is tried and the loop given a turn between tries, so a cancelled waiter never
    leaves a lock taken behind it. It may be held across awaits: the threads that wait for it
    are worker threads (``sending``), never the loop's.
    """
    lock = sender_lock(address)
    while not lock.acquire(blocking=False):  # noqa: ASYNC110  (released by worker threads, not the loop)
        await asyncio.sleep(_POLL_S)
    try:
        yield
    finally:
        lock.release()
