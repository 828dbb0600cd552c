"""Reorganisations of the embedded chain (``evm_snapshot`` / ``evm_revert``, then other blocks mined):
the registry events of the blocks that left are undone, and applied once when they come back."""

from __future__ import annotations

from typing import Any
from unittest.mock import ANY

from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from web3 import Web3

from exchange.chain.binding import BoundContract
from exchange.db.session import app_sessionmaker
from exchange.licenses.indexer import DeviceIndexer
from exchange.licenses.models import Device, DeviceBatch
from exchange.trading.settlement_models import ChainEvent, EventState
from tests.licenses_service.conftest import BPC, Service, account, licensed_member
from tests.licenses_service.test_device_batches import BPC_PER_DEVICE, devices, upload
from tests.support.chain import mine, rpc

OLD = devices(3, "OLD")  # a batch confirmed before the fork
NEW = devices(2, "NEW")  # a batch registered on the branch that a reorganisation removes
BLOCK_FIELDS = ("block", "registered_block", "revoked_block")


def send(w3: Web3, raw: bytes) -> None:
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw))
    assert receipt["status"] == 1, receipt


def signed_call(w3: Web3, sender: LocalAccount, contract: BoundContract, function: str, *args: Any) -> bytes:
    """`function` signed by `sender` (the same bytes can be sent again after a reorganisation), sent."""
    tx = contract.contract.get_function_by_name(function)(*args).build_transaction(
        {
            "from": sender.address,
            "nonce": w3.eth.get_transaction_count(sender.address),
            "maxFeePerGas": 4 * w3.eth.get_block("latest")["baseFeePerGas"] + 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    raw = bytes(sender.sign_transaction(dict(tx)).raw_transaction)
    send(w3, raw)
    return raw


def signed_api_transactions(
    service: Service, sender: LocalAccount, transactions: list[dict[str, Any]]
) -> list[bytes]:
    """The API's unsigned transactions, signed by `sender` and sent in order."""
    raws = []
    for tx in transactions:
        w3 = service.w3
        call = {"from": sender.address, "to": tx["to"], "data": tx["data"], "value": int(tx["value"])}
        signed = sender.sign_transaction(
            {
                **call,
                "chainId": tx["chain_id"],
                "nonce": w3.eth.get_transaction_count(sender.address),
                "gas": tx["gas"] if tx["gas"] is not None else w3.eth.estimate_gas(call),  # type: ignore[arg-type]
                "maxFeePerGas": 4 * w3.eth.get_block("latest")["baseFeePerGas"] + 10**9,
                "maxPriorityFeePerGas": 10**9,
            }
        )
        raws.append(bytes(signed.raw_transaction))
        send(service.w3, raws[-1])
    return raws


async def database(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, list[tuple[Any, ...]]]:
    """Every batch and device row, as plain tuples."""
    async with sessionmaker() as session:
        batches = (await session.scalars(select(DeviceBatch).order_by(DeviceBatch.id))).all()
        rows = (await session.scalars(select(Device).order_by(Device.batch_pk, Device.device_index))).all()
        return {
            "batches": [
                (
                    b.id,
                    b.status,
                    b.batch_id,
                    b.registered_block,
                    b.bpc_per_device_wei,
                    b.suspended,
                    b.confirmed_at,
                    b.device_count,
                    b.root,
                )
                for b in batches
            ],
            "devices": [(d.device_id, d.batch_pk, d.device_index, d.revoked_block) for d in rows],
        }


async def answers(service: Service) -> dict[str, Any]:
    reply = await service.client.post("/v1/devices/query", json={"devices": [*OLD, *NEW], "proofs": False})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def on_the_branch(rows: dict[str, list[tuple[Any, ...]]], fork_block: int, later: int) -> Any:
    """`rows` with the blocks after `fork_block` `later` blocks later; confirmed since, at any time."""
    return {
        "batches": [
            (*b[:3], b[3] + later, *b[4:6], ANY, *b[7:]) if b[3] is not None and b[3] > fork_block else b
            for b in rows["batches"]
        ],
        "devices": [
            (*d[:3], d[3] + later) if d[3] is not None and d[3] > fork_block else d for d in rows["devices"]
        ],
    }


def without_blocks(value: Any, fields: tuple[str, ...] = BLOCK_FIELDS) -> Any:
    """`value` without the block numbers named `fields` (by default all: they differ between branches)."""
    if isinstance(value, dict):
        return {key: without_blocks(item, fields) for key, item in value.items() if key not in fields}
    if isinstance(value, list):
        return [without_blocks(item, fields) for item in value]
    return value


async def event_states(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, list[str]]:
    """The recorded registry events' states, by event name."""
    async with sessionmaker() as session:
        rows = (await session.scalars(select(ChainEvent).order_by(ChainEvent.id))).all()
    states: dict[str, list[str]] = {}
    for row in rows:
        states.setdefault(row.name, []).append(row.state)
    return {name: sorted(values) for name, values in states.items()}


async def test_a_reorganisation_undoes_the_removed_blocks_and_their_transactions_apply_once_again(
    licensing: Service,
) -> None:
    sessionmaker = app_sessionmaker(licensing.app)
    manufacturer, council = account(1), account(0)
    licensed_member(licensing.pool, manufacturer)
    headers = await licensing.sign_in(manufacturer)
    devices_contract, bpc = licensing.pool.devices, licensing.pool.bpc
    old = await upload(licensing, headers, OLD)
    licensing.send(manufacturer, old["transactions"])
    new = await upload(licensing, headers, NEW)
    await licensing.catch_up()
    old_batch = int(devices_contract.call("batchCount"))
    before, answered_before = await database(sessionmaker), await answers(licensing)
    statuses = [answer["status"] for answer in answered_before["devices"]]
    assert statuses == ["licensed"] * 3 + ["unknown"] * 2
    fork_block = licensing.w3.eth.block_number

    fork = rpc(licensing.w3, "evm_snapshot")
    branch = [
        *signed_api_transactions(licensing, manufacturer, new["transactions"]),  # registers the new batch
        signed_call(licensing.w3, manufacturer, bpc, "approve", devices_contract.address, 10 * BPC),
        signed_call(licensing.w3, manufacturer, devices_contract, "topUp", old_batch, 7),
        signed_call(licensing.w3, manufacturer, devices_contract, "topUp", old_batch + 1, 11),
        signed_call(licensing.w3, manufacturer, devices_contract, "revokeDevices", old_batch, [1]),
        signed_call(licensing.w3, manufacturer, devices_contract, "revokeDevices", old_batch + 1, [0]),
        signed_call(licensing.w3, council, devices_contract, "suspendBatch", old_batch),
    ]
    assert await licensing.catch_up() == licensing.w3.eth.block_number
    applied, applied_rows = await answers(licensing), await database(sessionmaker)
    assert [(a["status"], a["bpc_per_device_wei"]) for a in applied["devices"]] == [
        ("suspended", str(BPC_PER_DEVICE + 7)),
        ("suspended", str(BPC_PER_DEVICE + 7)),
        ("suspended", str(BPC_PER_DEVICE + 7)),
        ("revoked", str(BPC_PER_DEVICE + 11)),
        ("licensed", str(BPC_PER_DEVICE + 11)),
    ]

    rpc(licensing.w3, "evm_revert", fork)
    mine(licensing.w3, 3)  # another branch, shorter than the one it replaces
    position = await licensing.licensing.indexer.position()
    assert position.rolled_back_to == fork_block
    assert position.credited_block == licensing.w3.eth.block_number
    assert await database(sessionmaker) == before
    undone = await answers(licensing)
    assert undone["block"] == licensing.w3.eth.block_number
    assert without_blocks(undone, ("block",)) == without_blocks(answered_before, ("block",))
    reversed_once = [EventState.REVERSED.value]
    assert await event_states(sessionmaker) == {
        "BatchRegistered": [EventState.CREDITED.value, *reversed_once],  # the old batch's stays
        "BatchToppedUp": reversed_once * 2,
        "DeviceRevoked": reversed_once * 2,
        "BatchStatusChanged": reversed_once,
    }

    for raw in branch:  # the same transactions, mined on the new branch
        send(licensing.w3, raw)
    await licensing.catch_up()
    again = await answers(licensing)
    assert again["block"] == licensing.w3.eth.block_number
    assert without_blocks(again) == without_blocks(applied)
    # The rows are those of the first branch, with its blocks three later (the new branch's empty blocks).
    assert await database(sessionmaker) == on_the_branch(applied_rows, fork_block, 3)
    assert await event_states(sessionmaker) == {
        "BatchRegistered": [EventState.CREDITED.value, EventState.CREDITED.value, *reversed_once],
        "BatchToppedUp": [EventState.CREDITED.value] * 2 + reversed_once * 2,
        "DeviceRevoked": [EventState.CREDITED.value] * 2 + reversed_once * 2,
        "BatchStatusChanged": [EventState.CREDITED.value, *reversed_once],
    }
    await licensing.catch_up()  # nothing new: nothing applied twice
    assert without_blocks(await answers(licensing)) == without_blocks(applied)


async def test_events_wait_for_the_confirmations_and_one_orphaned_before_is_never_applied(
    licensing: Service,
) -> None:
    sessionmaker = app_sessionmaker(licensing.app)
    manufacturer = account(1)
    licensed_member(licensing.pool, manufacturer)
    headers = await licensing.sign_in(manufacturer)
    indexer = DeviceIndexer(licensing.runtime, sessionmaker, confirmations=3, max_blocks=2)
    batch = await upload(licensing, headers, NEW)
    await indexer.catch_up()
    before = await database(sessionmaker)

    fork = rpc(licensing.w3, "evm_snapshot")
    signed_api_transactions(licensing, manufacturer, batch["transactions"])
    registered = licensing.w3.eth.block_number
    mine(licensing.w3, 2)
    assert await indexer.catch_up() == registered - 1  # two blocks deep: not yet
    assert await database(sessionmaker) == before
    assert [a["status"] for a in (await answers(licensing))["devices"][3:]] == ["unknown", "unknown"]
    assert await event_states(sessionmaker) == {"BatchRegistered": [EventState.SEEN.value]}

    rpc(licensing.w3, "evm_revert", fork)
    mine(licensing.w3, 6)
    position = await indexer.position()
    assert position.rolled_back_to is not None
    assert await event_states(sessionmaker) == {"BatchRegistered": [EventState.ORPHANED.value]}
    assert await database(sessionmaker) == before

    signed_api_transactions(licensing, manufacturer, batch["transactions"])  # registered on this branch
    registered = licensing.w3.eth.block_number
    mine(licensing.w3, 2)
    await indexer.catch_up()
    assert await database(sessionmaker) == before
    mine(licensing.w3, 1)  # three deep
    assert await indexer.catch_up() == registered
    rows = await database(sessionmaker)
    assert [(b[1], b[3]) for b in rows["batches"]] == [("confirmed", registered)]
    assert await event_states(sessionmaker) == {
        "BatchRegistered": [EventState.CREDITED.value, EventState.ORPHANED.value]
    }
    answered = await answers(licensing)
    assert answered["block"] == registered  # the head, less the confirmations
    assert [a["status"] for a in answered["devices"][3:]] == ["licensed", "licensed"]
    assert Web3.to_checksum_address(answered["devices"][3]["manufacturer"]) == manufacturer.address
