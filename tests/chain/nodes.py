"""Chains for tests: the embedded py-evm chain and a Hardhat node run as a subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from web3 import EthereumTesterProvider, Web3

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def hardhat_node(timeout_s: float = 120.0) -> Iterator[str]:
    """Start `npx hardhat node` on a free loopback port; yield its URL; stop it.

    The node is ready once it says so in its own log: another test process may have been
    given the same free port and answer on that URL first (this node then fails to bind).
    """
    npx = shutil.which("npx")
    if npx is None:
        raise RuntimeError("npx is not installed: run the project's setup first")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = ROOT / ".build" / f"hardhat-node-{port}-{os.getpid()}.log"
    listening = f"Started HTTP and WebSocket JSON-RPC server at {url}/".encode()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [npx, "hardhat", "node", "--hostname", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true"},
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"hardhat node exited early:\n{log_file.read_text(errors='replace')[-2000:]}"
                    )
                if listening in log_file.read_bytes():
                    with contextlib.suppress(httpx.HTTPError):
                        reply = httpx.post(
                            url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
                        )
                        if reply.status_code == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError("hardhat node did not start in time")
                time.sleep(0.3)
            yield url
        finally:
            # npx runs node as a child: signal the whole process group, or node outlives us.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def advance_time(w3: Web3, seconds: int) -> None:
    """Move the chain's clock forward and mine a block."""
    if isinstance(w3.provider, EthereumTesterProvider):
        latest = w3.eth.get_block("latest")
        w3.provider.ethereum_tester.time_travel(int(latest["timestamp"]) + seconds)
        return
    w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
