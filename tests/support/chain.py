"""JSON-RPC helpers for tests on a development chain (the embedded EVM or a Hardhat node)."""

from __future__ import annotations

from typing import Any

from web3 import Web3


def rpc(w3: Web3, method: str, *params: object) -> Any:
    """Call `method` (``evm_snapshot``, ``evm_revert``, ``evm_mine``, …) and return its result."""
    reply = w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in reply, reply
    return reply["result"]


def mine(w3: Web3, blocks: int) -> None:
    """Mine `blocks` empty blocks."""
    for _ in range(blocks):
        rpc(w3, "evm_mine")
