"""Blocking web3 work, run from async code without blocking the event loop.

The in-process EVM is not thread-safe: its calls run on the event loop's thread,
serialised with everything else the process does to it (they take milliseconds).
A JSON-RPC node is called from a worker thread. Either way one call runs at a
time per ``ChainCalls``, and web3's own exceptions leave as ``ChainUnavailable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from web3.exceptions import Web3Exception

from exchange.chain.errors import ChainError, ChainUnavailable

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
