"""Blocking web3 work, run from async code without blocking the event loop.

The in-process EVM is not thread-safe: its calls run on the event loop's thread,
serialised with everything else the process does to it (they take milliseconds).
A JSON-RPC node is called from a worker thread. Either way one call runs at a
time per ``ChainCalls``, and web3's own exceptions leave as ``ChainUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from web3.exceptions import Web3Exception

from exchange.chain.errors import ChainError, ChainUnavailable
from exchange.chain.senders import sending_async

T = TypeVar("T")


class ChainCalls:
    """Runs blocking chain code for one async component."""

    def __init__(self, *, embedded: bool) -> None:
        self.embedded = embedded
        self._lock = asyncio.Lock()

    async def run(self, action: Callable[[], T]) -> T:
        async with self._lock:
            try:
                if self.embedded:
                    return action()
                return await asyncio.to_thread(action)
            except ChainError:
                raise
            except (OSError, Web3Exception) as exc:
                raise ChainUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def sending(self, address: str) -> AbstractAsyncContextManager[None]:
        """Hold ``address``'s sender lock (``exchange.chain.senders``) from choosing a nonce until
        the node has the transaction. Not on the embedded EVM (a development chain): some of its
        transactions are sent from the loop's thread, which must never wait for a lock held
        across awaits."""
        return contextlib.nullcontext() if self.embedded else sending_async(address)
