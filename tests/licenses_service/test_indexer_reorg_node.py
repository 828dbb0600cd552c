"""The device-licence indexer on a Hardhat node (JSON-RPC, chain calls from worker threads): a
reorganisation (``evm_snapshot`` / ``evm_revert``) undoes the registry events of the removed blocks,
and the same transactions mined on the new branch apply once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from web3 import Web3
from web3.middleware import SignAndSendRawMiddlewareBuilder
from web3.types import Wei

from exchange.chain.deployment import deploy_pool
from exchange.chain.pool import PoolChain
from exchange.chain.provider import make_web3
from exchange.chain.runtime import ChainRuntime
from exchange.db.engine import create_engine_for_url
from exchange.licenses import batches
from exchange.licenses.device_ids import parse_canonical
from exchange.licenses.indexer import DeviceIndexer, registry_of
from exchange.licenses.repository import EngineReads
from exchange.licenses.resolver import Resolver, TreeCache
from exchange.licenses.transactions import UnsignedTransaction
from exchange.settings import Settings
from exchange.trading.settlement_models import EventState
from tests.chain.nodes import hardhat_node
from tests.licenses_service.conftest import BPC, licensed_member
from tests.licenses_service.test_device_batches import BPC_PER_DEVICE
from tests.licenses_service.test_indexer_reorg import (
    database,
    event_states,
    on_the_branch,
    send,
    signed_call,
    without_blocks,
)
from tests.support.chain import mine, rpc

pytestmark = [pytest.mark.hardhat]

DEVICES = [parse_canonical(f"serial:acme:NODE{n}") for n in range(3)]


def fixed_key(label: str) -> LocalAccount:
    account: LocalAccount = Account.from_key(keccak(f"licence-reorg-tests-{label}".encode()))
    return account


MANUFACTURER, REVOKER = fixed_key("manufacturer"), fixed_key("revoker")


@pytest.fixture(scope="module")
def node_runtime() -> Iterator[ChainRuntime]:
    """A Hardhat node with the pool deployed, a licensed manufacturer and a revoker (local keys)."""
    with hardhat_node() as url:
        w3 = make_web3(url)  # the node's first account deploys, and is the council
        for account in (MANUFACTURER, REVOKER):
            tx = w3.eth.send_transaction(
                {"from": w3.eth.accounts[0], "to": account.address, "value": Wei(10**20)}
            )
            w3.eth.wait_for_transaction_receipt(tx)
        w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build([MANUFACTURER, REVOKER]), layer=0)
        deployment = deploy_pool(w3)
        pool = PoolChain(w3, deployment)
        licensed_member(pool, MANUFACTURER)
        pool.devices.transact("grantRole", pool.devices.call("REVOKER_ROLE"), REVOKER.address)
        yield ChainRuntime(w3=w3, deployment=deployment, pool=pool, embedded=False)


@pytest.fixture
def runtime(node_runtime: ChainRuntime) -> Iterator[ChainRuntime]:
    snapshot = rpc(node_runtime.w3, "evm_snapshot")
    try:
        yield node_runtime
    finally:
        rpc(node_runtime.w3, "evm_revert", snapshot)


def signed_steps(w3: Web3, sender: LocalAccount, steps: list[UnsignedTransaction]) -> list[bytes]:
    """The upload's transactions signed by `sender` and sent in order."""
    raws = []
    for step in steps:
        call: dict[str, Any] = {
            "from": sender.address,
            "to": step.to,
            "data": step.data,
            "value": step.value_wei,
        }
        signed = sender.sign_transaction(
            {
                **call,
                "chainId": step.chain_id,
                "nonce": w3.eth.get_transaction_count(sender.address),
                "gas": step.gas if step.gas is not None else w3.eth.estimate_gas(call),  # type: ignore[arg-type]
                "maxFeePerGas": 4 * w3.eth.get_block("latest")["baseFeePerGas"] + 10**9,
                "maxPriorityFeePerGas": 10**9,
            }
        )
        raws.append(bytes(signed.raw_transaction))
        send(w3, raws[-1])
    return raws


async def test_on_a_node_a_reorganisation_is_undone_and_the_same_transactions_apply_once(
    runtime: ChainRuntime, sessionmaker: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    w3, devices_contract = runtime.w3, runtime.pool.devices
    indexer = DeviceIndexer(runtime, sessionmaker, max_blocks=3)
    engine = create_engine_for_url(database_url)
    resolver = Resolver(registry_of(runtime), EngineReads(engine), TreeCache(2**20))

    async def answers() -> list[dict[str, Any]]:
        _, answered = await resolver.resolve(DEVICES, proofs=False)
        return answered

    try:
        _, steps = await batches.upload(
            sessionmaker,
            runtime,
            MANUFACTURER.address,
            DEVICES,
            BPC_PER_DEVICE,
            batches.PendingRules.of(Settings()),
        )
        await indexer.catch_up()
        before, answered_before = await database(sessionmaker), await answers()
        assert [answer["status"] for answer in answered_before] == ["unknown"] * 3
        fork_block = w3.eth.block_number

        fork = rpc(w3, "evm_snapshot")
        branch = signed_steps(w3, MANUFACTURER, steps)
        batch_id = int(devices_contract.call("batchCount"))
        branch += [
            signed_call(w3, MANUFACTURER, runtime.pool.bpc, "approve", devices_contract.address, BPC),
            signed_call(w3, MANUFACTURER, devices_contract, "topUp", batch_id, 5),
            signed_call(w3, MANUFACTURER, devices_contract, "revokeDevices", batch_id, [1]),
            signed_call(w3, REVOKER, devices_contract, "suspendBatch", batch_id),
            signed_call(w3, REVOKER, devices_contract, "reinstateBatch", batch_id),
        ]
        assert await indexer.catch_up() == w3.eth.block_number
        applied, applied_rows = await answers(), await database(sessionmaker)
        assert [(a["status"], a["bpc_per_device_wei"]) for a in applied] == [
            ("licensed", str(BPC_PER_DEVICE + 5)),
            ("revoked", str(BPC_PER_DEVICE + 5)),
            ("licensed", str(BPC_PER_DEVICE + 5)),
        ]

        rpc(w3, "evm_revert", fork)
        mine(w3, 3)  # another branch, shorter than the one it replaces
        position = await indexer.position()
        assert position.rolled_back_to == fork_block
        assert await database(sessionmaker) == before
        assert without_blocks(await answers(), ("block",)) == without_blocks(answered_before, ("block",))
        assert await event_states(sessionmaker) == {
            "BatchRegistered": [EventState.REVERSED.value],
            "BatchToppedUp": [EventState.REVERSED.value],
            "DeviceRevoked": [EventState.REVERSED.value],
            "BatchStatusChanged": [EventState.REVERSED.value] * 2,
        }

        for raw in branch:  # the same transactions, mined on the new branch
            send(w3, raw)
        await indexer.catch_up()
        assert without_blocks(await answers()) == without_blocks(applied)
        assert await database(sessionmaker) == on_the_branch(applied_rows, fork_block, 3)
        once = [EventState.CREDITED.value, EventState.REVERSED.value]
        assert await event_states(sessionmaker) == {
            "BatchRegistered": once,
            "BatchToppedUp": once,
            "DeviceRevoked": once,
            "BatchStatusChanged": sorted(once * 2),
        }
    finally:
        await engine.dispose()
