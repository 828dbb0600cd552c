"""Python-built Merkle proofs checked by the DeviceLicenses contract on the embedded EVM.

One pool and one DeviceLicenses are deployed per module; a licensed manufacturer
registers batches of random devices (all three id schemes, sizes from 1 to
65,537). Tests that change state run inside an EVM snapshot that is reverted.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3.types import RPCEndpoint

from exchange.chain.binding import BoundContract
from exchange.chain.compiler import compile_contracts
from exchange.chain.deployment import deploy_pool, error_decoder
from exchange.chain.errors import ContractReverted
from exchange.chain.pool import MemberStatus, PoolChain, Tier
from exchange.chain.provider import make_web3
from exchange.licenses.device_ids import (
    DeviceId,
    Gs1DeviceId,
    ImeiDeviceId,
    SerialDeviceId,
    gs1_check_digit,
    imei_check_digit,
)
from exchange.licenses.merkle import MerkleTree, leaf_hash

BPC = 10**18
BPC_PER_DEVICE = 10**16
BATCH_SIZES = (1, 2, 7, 300, 65_537)
LICENSED, UNKNOWN_BATCH, INDEX_OUT_OF_RANGE, INVALID_PROOF, BATCH_SUSPENDED, REVOKED = range(6)
chain_settings = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Batch:
    batch_id: int
    devices: list[DeviceId]
    tree: MerkleTree


@dataclass
class DeviceChain:
    w3: Web3
    pool: PoolChain
    licenses: BoundContract
    manufacturer: str
    revoker: str
    batches: list[Batch]

    def status(self, batch_id: int, index: int, device: DeviceId, proof: list[bytes]) -> int:
        return int(self.licenses.call("deviceStatus", batch_id, index, device.id_hash, proof))

    def revert_to(self, snapshot: Any) -> None:
        self.w3.provider.make_request(RPCEndpoint("evm_revert"), [snapshot])


def random_device(rng: random.Random, n: int) -> DeviceId:
    scheme = rng.choice(["gs1", "imei", "serial"])
    if scheme == "gs1":
        body = f"{rng.randrange(1, 10**13):013d}"
        serial = "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-/.", k=rng.randint(1, 20)))
        if serial in (".", ".."):  # dot segments, which no link can carry: refused
            serial += "A"
        return Gs1DeviceId(body + gs1_check_digit(body), serial)
    if scheme == "imei":
        body = f"35{rng.randrange(10**12):012d}"
        return ImeiDeviceId(body + imei_check_digit(body))
    return SerialDeviceId(rng.choice(["acme", "com.example.phones"]), f"SN{n}-{rng.randrange(10**9)}")


@pytest.fixture(scope="module")
def chain() -> DeviceChain:
    w3 = make_web3()
    artifacts = compile_contracts()
    accounts = [Web3.to_checksum_address(a) for a in w3.eth.accounts]
    council, manufacturer, revoker, reference = accounts[:4]
    pool = PoolChain(w3, deploy_pool(w3, artifacts=artifacts), artifacts)

    artifact = artifacts["DeviceLicenses"]
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx_hash = factory.constructor(
        council, pool.bpc.address, pool.bpr.address, pool.registry.address
    ).transact({"from": council})
    address = w3.eth.wait_for_transaction_receipt(tx_hash)["contractAddress"]
    assert address is not None
    licenses = BoundContract(w3, "DeviceLicenses", address, artifact.abi, error_decoder(artifacts))
    licenses.transact("grantRole", licenses.call("REVOKER_ROLE"), revoker)

    # A licensed manufacturer: a Small member that locked the Small threshold.
    pool.set_tier_reference(Tier.SMALL, reference)
    pool.mint_bpc(reference, 100 * BPC)
    pool.admit(manufacturer, Tier.SMALL)
    pool.mint_bpc(manufacturer, 10_000 * BPC)
    pool.acquire(100 * BPC, sender=manufacturer)
    assert pool.is_licensed(manufacturer)
    pool.approve_bpc(licenses.address, 2**256 - 1, sender=manufacturer)

    rng = random.Random(20261121)
    batches = []
    for size in BATCH_SIZES:
        devices = [random_device(rng, n) for n in range(size)]
        tree = MerkleTree.build([device.id_hash for device in devices])
        licenses.transact("registerBatch", tree.root, size, BPC_PER_DEVICE, sender=manufacturer)
        batches.append(Batch(int(licenses.call("batchCount")), devices, tree))
    return DeviceChain(w3, pool, licenses, manufacturer, revoker, batches)


@pytest.fixture
def snapshot(chain: DeviceChain) -> Iterator[DeviceChain]:
    taken = chain.w3.provider.make_request(RPCEndpoint("evm_snapshot"), [])["result"]
    try:
        yield chain
    finally:
        chain.revert_to(taken)


def test_batches_are_recorded_and_their_bpc_is_embedded(chain: DeviceChain) -> None:
    for batch in chain.batches:
        manufacturer, count, revoked, status, root, per_device, _block = chain.licenses.call(
            "batchOf", batch.batch_id
        )
        assert (manufacturer, count, revoked, status, root) == (
            chain.manufacturer,
            len(batch.devices),
            0,
            1,
            batch.tree.root,
        )
        assert per_device == BPC_PER_DEVICE
    assert chain.pool.bpc_balance(chain.licenses.address) == sum(BATCH_SIZES) * BPC_PER_DEVICE


@chain_settings
@given(index=st.integers(0, 2**256 - 1), id_hash=st.binary(min_size=32, max_size=32))
def test_leaf_hash_is_the_contracts(chain: DeviceChain, index: int, id_hash: bytes) -> None:
    assert chain.licenses.call("leafHash", index, id_hash) == leaf_hash(index, id_hash)


@chain_settings
@given(data=st.data())
def test_python_proofs_verify_on_chain(chain: DeviceChain, data: st.DataObject) -> None:
    batch = data.draw(st.sampled_from(chain.batches), label="batch")
    index = data.draw(st.integers(0, len(batch.devices) - 1), label="index")
    device, proof = batch.devices[index], batch.tree.proof(index)
    assert chain.status(batch.batch_id, index, device, proof) == LICENSED
    assert chain.licenses.call("isLicensed", batch.batch_id, index, device.id_hash, proof) is True


@chain_settings
@given(data=st.data())
def test_a_proof_for_one_batch_fails_in_another(chain: DeviceChain, data: st.DataObject) -> None:
    batch = data.draw(st.sampled_from(chain.batches), label="batch")
    other = data.draw(st.sampled_from([b for b in chain.batches if b is not batch]), label="other")
    index = data.draw(st.integers(0, len(batch.devices) - 1), label="index")
    device, proof = batch.devices[index], batch.tree.proof(index)
    expected = INDEX_OUT_OF_RANGE if index >= len(other.devices) else INVALID_PROOF
    assert chain.status(other.batch_id, index, device, proof) == expected
    assert chain.licenses.call("isLicensed", other.batch_id, index, device.id_hash, proof) is False


@chain_settings
@given(data=st.data())
def test_a_proof_for_another_device_of_the_batch_fails(chain: DeviceChain, data: st.DataObject) -> None:
    batch = data.draw(st.sampled_from([b for b in chain.batches if len(b.devices) > 1]), label="batch")
    index = data.draw(st.integers(0, len(batch.devices) - 1), label="index")
    other = data.draw(st.integers(0, len(batch.devices) - 1).filter(lambda i: i != index), label="other")
    proof = batch.tree.proof(index)
    assert chain.status(batch.batch_id, index, batch.devices[other], proof) == INVALID_PROOF
    assert chain.status(batch.batch_id, other, batch.devices[index], proof) == INVALID_PROOF


def test_revoked_devices_fail_and_revocation_is_final(snapshot: DeviceChain) -> None:
    chain = snapshot
    rng = random.Random(7)
    batch = chain.batches[-1]
    revoked = sorted(rng.sample(range(len(batch.devices)), 12))
    by_manufacturer, by_foundation = revoked[:6], revoked[6:]
    chain.licenses.transact("revokeDevices", batch.batch_id, by_manufacturer, sender=chain.manufacturer)
    chain.licenses.transact("revokeDevices", batch.batch_id, by_foundation, sender=chain.revoker)
    neighbours = {min(i + 1, len(batch.devices) - 1) for i in revoked} - set(revoked)
    for index in revoked + sorted(neighbours):
        expected = REVOKED if index in revoked else LICENSED
        assert chain.status(batch.batch_id, index, batch.devices[index], batch.tree.proof(index)) == expected
    assert chain.licenses.call("batchOf", batch.batch_id)[2] == len(revoked)
    with pytest.raises(ContractReverted) as caught:
        chain.licenses.transact("revokeDevices", batch.batch_id, [revoked[0]], sender=chain.revoker)
    assert caught.value.error_name == "DevicesAlreadyRevoked"
    assert caught.value.error_args == {"batchId": batch.batch_id, "index": revoked[0]}
    # Revocation leaves the embedded BPC where it is.
    assert chain.pool.bpc_balance(chain.licenses.address) == sum(BATCH_SIZES) * BPC_PER_DEVICE


def test_suspended_batch_fails_until_reinstated(snapshot: DeviceChain) -> None:
    chain = snapshot
    batch = chain.batches[2]
    chain.licenses.transact("suspendBatch", batch.batch_id, sender=chain.revoker)
    for index, device in enumerate(batch.devices):
        assert chain.status(batch.batch_id, index, device, batch.tree.proof(index)) == BATCH_SUSPENDED
    chain.licenses.transact("reinstateBatch", batch.batch_id, sender=chain.revoker)
    assert chain.status(batch.batch_id, 0, batch.devices[0], batch.tree.proof(0)) == LICENSED


def test_stored_tree_serves_proofs_the_contract_accepts(chain: DeviceChain) -> None:
    batch = chain.batches[-1]
    stored = MerkleTree.from_bytes(batch.tree.to_bytes())
    assert stored.depth == 17
    for index in (0, 1, 65_535, 65_536, 31_337):
        proof = stored.proof(index)
        assert chain.status(batch.batch_id, index, batch.devices[index], proof) == LICENSED
    # The odd last device rises alone to the top level, where it meets the other 65,536.
    assert len(stored.proof(65_536)) == 1


def test_registration_is_refused_to_an_unlicensed_account(chain: DeviceChain) -> None:
    outsider = Web3.to_checksum_address(list(chain.w3.eth.accounts)[5])
    with pytest.raises(ContractReverted) as caught:
        chain.licenses.transact(
            "registerBatch", chain.batches[0].tree.root, 1, BPC_PER_DEVICE, sender=outsider
        )
    assert caught.value.error_name == "DevicesManufacturerNotLicensed"
    assert caught.value.error_args == {"account": outsider}


def test_registration_is_refused_to_a_suspended_member_until_reinstated(snapshot: DeviceChain) -> None:
    chain = snapshot
    root = chain.batches[0].tree.root
    chain.pool.suspend(chain.manufacturer)
    assert chain.pool.is_licensed(chain.manufacturer)
    with pytest.raises(ContractReverted) as caught:
        chain.licenses.transact("registerBatch", root, 1, BPC_PER_DEVICE, sender=chain.manufacturer)
    assert caught.value.error_name == "DevicesManufacturerNotActive"
    assert caught.value.error_args == {"account": chain.manufacturer, "status": MemberStatus.SUSPENDED}
    chain.pool.reinstate(chain.manufacturer)
    chain.licenses.transact("registerBatch", root, 1, BPC_PER_DEVICE, sender=chain.manufacturer)
    assert chain.licenses.call("batchCount") == len(BATCH_SIZES) + 1
