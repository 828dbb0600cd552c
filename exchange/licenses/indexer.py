"""The device-licence indexer: DeviceLicenses events applied to the database, from a persisted cursor.

Each pass asks the node for the registry's logs from the block after the cursor up to the head
minus the configured confirmations, in ranges of at most ``max_blocks``, and applies each range
in one database transaction together with the new cursor, so a crash between ranges repeats
nothing and loses nothing: the next start resumes from the cursor.

Events and their effect:

* ``BatchRegistered(batchId, manufacturer, root, deviceCount, bpcPerDevice, …)`` confirms the
  oldest pending upload of that manufacturer with that root and count (on-chain id and block).
  A batch registered without an upload here is logged and ignored: the service does not know
  its devices, so it cannot resolve them.
* ``BatchToppedUp(batchId, …, bpcPerDevice, …)`` sets the batch's BPC per device.
* ``DeviceRevoked(batchId, index, …)`` marks the device revoked at that block.
* ``BatchStatusChanged(batchId, from, to, …)`` suspends (to = Suspended) or reinstates it.

Chain reorganisations deeper than the confirmations are not undone; on a chain with reorgs,
set ``EXCHANGE_LICENCE_INDEXER_CONFIRMATIONS`` to a depth the chain does not reorganise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from web3 import Web3
from web3.exceptions import Web3Exception

from exchange.chain.errors import ChainError
from exchange.chain.runtime import ChainRuntime
from exchange.kit.logging import get_logger
from exchange.licenses import repository
from exchange.licenses.repository import Registry

log = get_logger(__name__)
T = TypeVar("T")

SUSPENDED = 2  # IDeviceLicenses.BatchStatus.Suspended
_EVENTS = ("BatchRegistered", "BatchToppedUp", "DeviceRevoked", "BatchStatusChanged")


async def on_chain(runtime: ChainRuntime, action: Callable[[], T]) -> T:
    """Run a blocking chain call: inline on the embedded EVM, in a worker thread for a node.

    The in-process EVM is not thread-safe; running its calls on the event loop's thread
    serialises them with everything else this process does to it. Its calls take milliseconds.
    """
    if runtime.embedded:
        return action()
    return await asyncio.to_thread(action)


def registry_of(runtime: ChainRuntime) -> Registry:
    return Registry(runtime.deployment.chain_id, runtime.deployment.address("DeviceLicenses"))


class DeviceIndexer:
    """Follows one DeviceLicenses contract into the database."""

    def __init__(
        self,
        runtime: ChainRuntime,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        confirmations: int = 0,
        max_blocks: int = 2_000,
    ) -> None:
        self.runtime = runtime
        self.registry = registry_of(runtime)
        self._sessionmaker = sessionmaker
        self._confirmations = confirmations
        self._max_blocks = max_blocks
        contract = runtime.pool.devices.contract
        self._events = {
            getattr(contract.events, name).topic: getattr(contract.events, name)() for name in _EVENTS
        }
        self._lock = asyncio.Lock()

    async def catch_up(self) -> int:
        """Apply every event up to the confirmed head; return the new cursor block."""
        async with self._lock:  # one pass at a time, whoever asks
            w3 = self.runtime.w3
            head = await on_chain(self.runtime, lambda: int(w3.eth.block_number)) - self._confirmations
            async with self._sessionmaker() as session:
                cursor = await repository.cursor_block(session, self.registry)
            start = cursor + 1 if cursor is not None else self.runtime.deployment.deploy_block
            if cursor is None and head < start:
                head = start  # a fresh deployment: the deploy block holds no registry events
            while start <= head:
                end = min(head, start + self._max_blocks - 1)
                logs = await on_chain(self.runtime, partial(self._logs, w3, start, end))
                async with self._sessionmaker() as session, session.begin():
                    for entry in logs:
                        await self._apply(session, entry)
                    await repository.set_cursor(session, self.registry, end)
                if logs:
                    log.info("licence.indexed", first_block=start, last_block=end, events=len(logs))
                start = cursor = end
                start += 1
            return cursor if cursor is not None else start - 1

    def _logs(self, w3: Web3, start: int, end: int) -> list[Any]:
        address = Web3.to_checksum_address(self.registry.address)
        raw = w3.eth.get_logs({"address": address, "fromBlock": start, "toBlock": end})
        ordered = sorted(raw, key=lambda entry: (entry["blockNumber"], entry["logIndex"]))
        decoded = []
        for entry in ordered:
            topics = entry["topics"]
            event = self._events.get("0x" + bytes(topics[0]).hex()) if topics else None
            if event is not None:
                decoded.append(event.process_log(entry))
        return decoded

    async def _apply(self, session: AsyncSession, entry: Any) -> None:
        name, args, block = entry["event"], entry["args"], int(entry["blockNumber"])
        registry = self.registry
        if name == "BatchRegistered":
            root = "0x" + bytes(args["root"]).hex()
            upload = await repository.confirm_batch(
                session,
                registry,
                batch_id=int(args["batchId"]),
                manufacturer=Web3.to_checksum_address(args["manufacturer"]),
                root=root,
                device_count=int(args["deviceCount"]),
                bpc_per_device_wei=int(args["bpcPerDevice"]),
                block=block,
            )
            if upload is None:
                log.warning("licence.batch_unknown", batch_id=int(args["batchId"]), root=root, block=block)
            else:
                log.info(
                    "licence.batch_confirmed", upload_id=upload, batch_id=int(args["batchId"]), block=block
                )
        elif name == "BatchToppedUp":
            await repository.set_bpc_per_device(
                session, registry, int(args["batchId"]), int(args["bpcPerDevice"])
            )
        elif name == "DeviceRevoked":
            await repository.revoke_devices(
                session, registry, int(args["batchId"]), [int(args["index"])], block
            )
        elif name == "BatchStatusChanged":
            suspended = int(args["newStatus"]) == SUSPENDED
            await repository.set_suspended(session, registry, int(args["batchId"]), suspended)
            log.info("licence.batch_status", batch_id=int(args["batchId"]), suspended=suspended, block=block)

    async def run(self, interval_s: float) -> None:
        """Catch up every `interval_s` seconds until cancelled; failures are logged and retried."""
        while True:
            try:
                await self.catch_up()
            except (ChainError, Web3Exception, SQLAlchemyError, OSError) as exc:
                log.warning("licence.indexer_failed", error=str(exc), error_type=type(exc).__name__)
            await asyncio.sleep(interval_s)
