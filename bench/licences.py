"""Per-device licensing benchmark: registration gas against one NFT per device, and Merkle tree time.

    .venv/bin/python bench/licences.py [--tree-devices 1000000] [--nft-batch 500]

On the embedded EVM it deploys the pool, a licensed manufacturer, DeviceLicenses
and the DeviceNFT baseline (contracts/test/DeviceNFT.sol), then measures:

* gas per device of ``registerBatch`` for batches of 1, 1,000 and 100,000
  devices (after one warm-up registration, so the contract's BPC balance and
  batch counter are no longer zero: every registration but the very first pays
  this), and the gas of an ``isLicensed`` check in the 100,000-device batch;
* gas per device of minting one ERC-721 token per device, in one transaction
  of one token and one of ``--nft-batch`` tokens (the cheapest way to mint
  NFTs; the per-device figure is the batch one);
* the time to hash ``--tree-devices`` canonical device ids, build their tree
  (after which every proof is a few slices away), produce 10,000 proofs, and
  serialise and reload the tree.

Numbers are printed; the last line is one JSON object. Nothing passes or fails on time.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from web3 import Web3

from exchange.chain.binding import BoundContract
from exchange.chain.compiler import Artifact, compile_contracts
from exchange.chain.deployment import deploy_pool, error_decoder
from exchange.chain.pool import PoolChain, Tier
from exchange.chain.provider import make_web3
from exchange.licenses.device_ids import SerialDeviceId
from exchange.licenses.merkle import MerkleTree

BPC = 10**18
REGISTRATION_SIZES = (1, 1_000, 100_000)


def deploy(w3: Web3, artifacts: dict[str, Artifact], name: str, *args: Any) -> BoundContract:
    artifact = artifacts[name]
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = w3.eth.wait_for_transaction_receipt(factory.constructor(*args).transact())
    address = receipt["contractAddress"]
    if address is None:
        raise RuntimeError(f"{name} was not deployed")
    return BoundContract(w3, name, address, artifact.abi, error_decoder(artifacts))


def device_hashes(count: int, prefix: str) -> list[bytes]:
    return [SerialDeviceId("bench", f"{prefix}{n}").id_hash for n in range(count)]


def measure_gas(nft_batch: int) -> dict[str, Any]:
    w3 = make_web3()
    artifacts = compile_contracts()
    council, manufacturer, reference = (Web3.to_checksum_address(a) for a in list(w3.eth.accounts)[:3])
    pool = PoolChain(w3, deploy_pool(w3, artifacts=artifacts), artifacts)
    licenses = deploy(w3, artifacts, "DeviceLicenses", council, pool.bpc.address, pool.bpr.address)
    nft = deploy(w3, artifacts, "DeviceNFT")
    pool.set_tier_reference(Tier.SMALL, reference)
    pool.mint_bpc(reference, 100 * BPC)
    pool.admit(manufacturer, Tier.SMALL)
    pool.mint_bpc(manufacturer, 10_000 * BPC)
    pool.acquire(100 * BPC, sender=manufacturer)
    pool.approve_bpc(licenses.address, 2**256 - 1, sender=manufacturer)

    def register(tree: MerkleTree) -> int:
        receipt = licenses.transact("registerBatch", tree.root, tree.count, 10**15, sender=manufacturer)
        return int(receipt["gasUsed"])

    results: dict[str, Any] = {
        "first_registration_gas": register(MerkleTree.build(device_hashes(1, "warm-")))
    }
    trees: dict[int, tuple[list[bytes], MerkleTree]] = {}
    for size in REGISTRATION_SIZES:
        hashes = device_hashes(size, f"batch{size}-")
        trees[size] = hashes, MerkleTree.build(hashes)
        gas = register(trees[size][1])
        results[f"registration_gas_{size}"] = gas
        results[f"gas_per_device_{size}"] = gas / size
        print(f"registerBatch {size:>7,} devices: {gas:>9,} gas  {gas / size:>12,.2f} gas/device")
    hashes, tree = trees[100_000]
    batch_id = int(licenses.call("batchCount"))
    index = 2 * tree.count // 3
    function = licenses.contract.functions.isLicensed(batch_id, index, hashes[index], tree.proof(index))
    if function.call() is not True:
        raise RuntimeError("the contract refused a proof of the benchmark batch")
    results["is_licensed_gas_100k"] = int(function.estimate_gas())
    print(
        f"isLicensed in the 100,000-device batch (proof of {len(tree.proof(index))}): "
        f"{results['is_licensed_gas_100k']:,} gas (a call: free to the caller)"
    )

    for count in (1, nft_batch):
        receipt = nft.transact("mintDevices", manufacturer, device_hashes(count, f"nft{count}-"))
        gas = int(receipt["gasUsed"])
        results[f"nft_mint_gas_{count}"] = gas
        print(f"DeviceNFT.mintDevices {count:>5,} tokens: {gas:>11,} gas  {gas / count:>12,.2f} gas/device")
    results["nft_gas_per_device"] = results[f"nft_mint_gas_{nft_batch}"] / nft_batch
    ratio = results["nft_gas_per_device"] / results["gas_per_device_100000"]
    print(f"one NFT per device costs {ratio:,.0f} times a 100,000-device batch registration, per device")
    return results


def measure_tree(count: int) -> dict[str, float]:
    started = time.perf_counter()
    hashes = device_hashes(count, "SN")
    hashed = time.perf_counter()
    tree = MerkleTree.build(hashes)
    built = time.perf_counter()
    for sample in range(10_000):
        tree.proof(sample * 7_919 % count)  # spread over the whole tree
    proved = time.perf_counter()
    data = tree.to_bytes()
    MerkleTree.from_bytes(data)
    reloaded = time.perf_counter()
    print(
        f"{count:,} devices: canonical ids + keccak {hashed - started:.2f} s, tree {built - hashed:.2f} s "
        f"(depth {tree.depth}), 10,000 proofs {proved - built:.3f} s, "
        f"serialise + reload with check {reloaded - proved:.2f} s ({len(data) / 2**20:.0f} MiB)"
    )
    return {
        "ids_s": hashed - started,
        "tree_s": built - hashed,
        "proof_us": (proved - built) / 10_000 * 1e6,
        "reload_s": reloaded - proved,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree-devices", type=int, default=1_000_000)
    parser.add_argument("--nft-batch", type=int, default=500)
    args = parser.parse_args()
    gas = measure_gas(args.nft_batch)
    tree = measure_tree(args.tree_devices)
    summary = {
        "gas_per_device_100k": round(gas["gas_per_device_100000"], 3),
        "nft_gas_per_device": round(gas["nft_gas_per_device"], 1),
        "merkle_1m_s": round(tree["tree_s"], 2),
        "registration_gas_1": gas["registration_gas_1"],
        "registration_gas_1k": gas["registration_gas_1000"],
        "registration_gas_100k": gas["registration_gas_100000"],
        "first_registration_gas": gas["first_registration_gas"],
        "is_licensed_gas_100k": gas["is_licensed_gas_100k"],
        "nft_mint_gas_1": gas["nft_mint_gas_1"],
        "merkle_tree_devices": args.tree_devices,
        "merkle_ids_s": round(tree["ids_s"], 2),
        "merkle_proof_us": round(tree["proof_us"], 1),
        "merkle_reload_s": round(tree["reload_s"], 2),
    }
    print(json.dumps(summary, sort_keys=False))


if __name__ == "__main__":
    main()
