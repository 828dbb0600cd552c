// DeviceLicenses: Merkle proofs built in JavaScript, checked by isLicensed and deviceStatus.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const {
  BPC_PER_DEVICE,
  DeviceStatus,
  deployDeviceLicenses,
  deployWithBatches,
  serialIds,
  treeOf,
} = require("./fixtures");
const { deviceIdHash, hashPair, leafHash, rootFromProof, sortedHashPair, treeOfLeaves } = require("./merkle");

// The tree over serial:acme:SN0 .. serial:acme:SN4; tests/licenses/test_merkle.py
// checks the same value, so the JavaScript and Python trees agree.
const GOLDEN_ROOT_SN0_TO_SN4 = "0xbb4e8c552de6138077225f489e75e44bc8ef689c38c976f56f1ec1114a751720";

describe("DeviceLicenses: leaves and trees", function () {
  it("hashes leaves like the JavaScript tree: OpenZeppelin's double hash of (index, id hash)", async function () {
    const { devices } = await loadFixture(deployDeviceLicenses);
    const idHash = ethers.id("serial:acme:SN0");
    for (const index of [0n, 1n, 255n, 2n ** 32n - 1n]) {
      expect(await devices.leafHash(index, idHash)).to.equal(leafHash(index, idHash));
    }
    const single = ethers.keccak256(
      ethers.AbiCoder.defaultAbiCoder().encode(["uint256", "bytes32"], [0, idHash]),
    );
    expect(await devices.leafHash(0, idHash)).to.equal(ethers.keccak256(single));
  });

  it("builds the agreed golden root", function () {
    expect(treeOf(serialIds(5)).root).to.equal(GOLDEN_ROOT_SN0_TO_SN4);
  });

  it("proves every device of trees of 1 to 33 devices, in JavaScript and on chain", async function () {
    const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
    let batchId = 0n;
    for (const count of [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33]) {
      const tree = treeOf(serialIds(count, { prefix: `T${count}-` }));
      await devices.connect(manufacturer).registerBatch(tree.root, count, 1);
      batchId += 1n;
      for (let index = 0; index < count; index += 1) {
        const proof = tree.proof(index);
        expect(rootFromProof(tree.leaf(index), index, count, proof)).to.equal(tree.root);
        expect(await devices.isLicensed(batchId, index, tree.idHashes[index], proof)).to.equal(true);
      }
    }
  });
});

describe("DeviceLicenses: isLicensed and deviceStatus", function () {
  it("is Licensed for a valid proof of an active batch", async function () {
    const { devices, first } = await loadFixture(deployWithBatches);
    expect(await devices.deviceStatus(1, 3, first.idHashes[3], first.proof(3))).to.equal(DeviceStatus.Licensed);
  });

  it("refuses a proof of one batch in another batch", async function () {
    const { devices, first, second } = await loadFixture(deployWithBatches);
    for (let index = 0; index < first.count; index += 1) {
      expect(await devices.deviceStatus(2, index, first.idHashes[index], first.proof(index))).to.equal(
        DeviceStatus.InvalidProof,
      );
      expect(await devices.isLicensed(2, index, first.idHashes[index], first.proof(index))).to.equal(false);
    }
    expect(await devices.deviceStatus(1, 0, second.idHashes[0], second.proof(0))).to.equal(
      DeviceStatus.InvalidProof,
    );
  });

  it("refuses the same device registered in two batches under the other batch's proof", async function () {
    const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
    const ids = serialIds(6);
    const batchA = treeOf(ids);
    const batchB = treeOf([...ids].reverse());
    await devices.connect(manufacturer).registerBatch(batchA.root, 6, 1);
    await devices.connect(manufacturer).registerBatch(batchB.root, 6, 1);
    // SN0 is index 0 in A and index 5 in B: each proof works only in its own batch.
    expect(await devices.isLicensed(1, 0, batchA.idHashes[0], batchA.proof(0))).to.equal(true);
    expect(await devices.isLicensed(2, 5, batchB.idHashes[5], batchB.proof(5))).to.equal(true);
    expect(await devices.isLicensed(2, 0, batchA.idHashes[0], batchA.proof(0))).to.equal(false);
    expect(await devices.isLicensed(1, 5, batchB.idHashes[5], batchB.proof(5))).to.equal(false);
  });

  it("refuses a wrong id hash, a wrong index and a tampered proof", async function () {
    const { devices, first } = await loadFixture(deployWithBatches);
    const proof = first.proof(2);
    expect(await devices.deviceStatus(1, 2, first.idHashes[1], proof)).to.equal(DeviceStatus.InvalidProof);
    expect(await devices.deviceStatus(1, 1, first.idHashes[2], proof)).to.equal(DeviceStatus.InvalidProof);
    const tampered = [...proof];
    tampered[0] = ethers.toBeHex(BigInt(tampered[0]) ^ 1n, 32);
    expect(await devices.deviceStatus(1, 2, first.idHashes[2], tampered)).to.equal(DeviceStatus.InvalidProof);
    expect(await devices.deviceStatus(1, 2, first.idHashes[2], proof.slice(1))).to.equal(
      DeviceStatus.InvalidProof,
    );
    expect(await devices.deviceStatus(1, 2, first.idHashes[2], [])).to.equal(DeviceStatus.InvalidProof);
  });

  it("refuses an inner node presented as a device", async function () {
    const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
    const tree = treeOf(serialIds(4));
    await devices.connect(manufacturer).registerBatch(tree.root, 4, 1);
    const [leaves, inner] = tree.levels;
    expect(hashPair(inner[0], inner[1])).to.equal(tree.root);
    // With plain leaves, (inner[0], [inner[1]]) would prove; the double-hashed leaf rules it out.
    for (const index of [0, 1, 2, 3]) {
      expect(await devices.deviceStatus(1, index, inner[0], [inner[1]])).to.equal(DeviceStatus.InvalidProof);
      expect(await devices.deviceStatus(1, index, leaves[index], tree.proof(index))).to.equal(
        DeviceStatus.InvalidProof,
      );
    }
  });

  it("reports unknown batches and indices out of range", async function () {
    const { devices, first } = await loadFixture(deployWithBatches);
    expect(await devices.deviceStatus(0, 0, first.idHashes[0], first.proof(0))).to.equal(DeviceStatus.UnknownBatch);
    expect(await devices.deviceStatus(3, 0, first.idHashes[0], first.proof(0))).to.equal(DeviceStatus.UnknownBatch);
    expect(await devices.deviceStatus(1, 5, first.idHashes[0], first.proof(0))).to.equal(
      DeviceStatus.IndexOutOfRange,
    );
    expect(await devices.deviceStatus(1, ethers.MaxUint256, first.idHashes[0], [])).to.equal(
      DeviceStatus.IndexOutOfRange,
    );
  });

  it("checks the proof before the batch status and the revocation bitmap", async function () {
    const { devices, registrar, manufacturer, first } = await loadFixture(deployWithBatches);
    await devices.connect(manufacturer).revokeDevices(1, [0]);
    await devices.connect(registrar).suspendBatch(1);
    expect(await devices.deviceStatus(1, 0, first.idHashes[1], first.proof(0))).to.equal(DeviceStatus.InvalidProof);
    expect(await devices.deviceStatus(1, 0, first.idHashes[0], first.proof(0))).to.equal(
      DeviceStatus.BatchSuspended,
    );
    await devices.connect(registrar).reinstateBatch(1);
    expect(await devices.deviceStatus(1, 0, first.idHashes[0], first.proof(0))).to.equal(DeviceStatus.Revoked);
  });
});

/** The root OpenZeppelin's MerkleProof (sorted pairs) computes from `leaf` and `proof`. */
function sortedPairRoot(leaf, proof) {
  return proof.reduce((node, sibling) => sortedHashPair(node, sibling), leaf);
}

// The former check, MerkleProof over sorted pairs with only `index < deviceCount`, accepted any
// path to the root: a tree of K leaves all with index 0, registered (and paid for) as one device,
// licensed all K devices. A proof must now follow the one path that the device's index takes in a
// tree of deviceCount leaves, hashing left before right, and be used up exactly.
describe("DeviceLicenses: proofs bound to the batch's device count", function () {
  const PAIRINGS = [
    ["sorted pairs", sortedHashPair],
    ["positional pairs", hashPair],
  ];

  for (const [name, pair] of PAIRINGS) {
    it(`licenses none of several index-0 leaves registered as one device (${name})`, async function () {
      const { bpc, devices, manufacturer } = await loadFixture(deployDeviceLicenses);
      const idHashes = serialIds(6, { prefix: "CLONE-" }).map(deviceIdHash);
      const forged = treeOfLeaves(idHashes.map((idHash) => leafHash(0, idHash)), pair);
      if (pair === sortedHashPair) {
        for (let k = 0; k < idHashes.length; k += 1) {
          expect(sortedPairRoot(forged.leaf(k), forged.proof(k))).to.equal(forged.root);
        }
      }
      await devices.connect(manufacturer).registerBatch(forged.root, 1, BPC_PER_DEVICE);
      expect(await bpc.balanceOf(await devices.getAddress())).to.equal(BPC_PER_DEVICE);
      for (let k = 0; k < idHashes.length; k += 1) {
        expect(await devices.deviceStatus(1, 0, idHashes[k], forged.proof(k))).to.equal(DeviceStatus.InvalidProof);
        expect(await devices.isLicensed(1, 0, idHashes[k], forged.proof(k))).to.equal(false);
        expect(await devices.isLicensed(1, 0, idHashes[k], [])).to.equal(false);
      }
    });
  }

  it("licenses exactly the one device of a one-device batch", async function () {
    const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
    const idHashes = serialIds(6, { prefix: "CLONE-" }).map(deviceIdHash);
    const forged = treeOfLeaves(idHashes.map((idHash) => leafHash(0, idHash)));
    await devices.connect(manufacturer).registerBatch(leafHash(0, idHashes[0]), 1, BPC_PER_DEVICE);
    const licensed = [];
    for (let k = 0; k < idHashes.length; k += 1) {
      for (const proof of [[], forged.proof(k)]) {
        if (await devices.isLicensed(1, 0, idHashes[k], proof)) licensed.push([k, proof.length]);
      }
    }
    expect(licensed).to.deep.equal([[0, 0]]);
  });

  it("licenses none of the devices of a tree registered with fewer devices than it has", async function () {
    const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
    const tree = treeOf(serialIds(8, { prefix: "BIG-" }));
    await devices.connect(manufacturer).registerBatch(tree.root, 4, BPC_PER_DEVICE);
    for (let index = 0; index < tree.count; index += 1) {
      expect(await devices.deviceStatus(1, index, tree.idHashes[index], tree.proof(index))).to.equal(
        index < 4 ? DeviceStatus.InvalidProof : DeviceStatus.IndexOutOfRange,
      );
    }
  });

  for (const [name, pair] of PAIRINGS) {
    it(`refuses a proof one element too long, even one that leads to the root (${name})`, async function () {
      const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
      const [h0, h1, h2, h3] = serialIds(4, { prefix: "DEEP-" }).map(deviceIdHash);
      // Device 2 of 3 has a one-element proof; here two devices with index 2 hide under its node.
      const left = pair(leafHash(0, h0), leafHash(1, h1));
      const hidden = pair(leafHash(2, h2), leafHash(2, h3));
      const root = pair(left, hidden);
      await devices.connect(manufacturer).registerBatch(root, 3, BPC_PER_DEVICE);
      if (pair === sortedHashPair) {
        expect(sortedPairRoot(leafHash(2, h2), [leafHash(2, h3), left])).to.equal(root);
      }
      expect(await devices.deviceStatus(1, 2, h2, [leafHash(2, h3), left])).to.equal(DeviceStatus.InvalidProof);
      expect(await devices.deviceStatus(1, 2, h3, [leafHash(2, h2), left])).to.equal(DeviceStatus.InvalidProof);
      expect(await devices.deviceStatus(1, 2, h2, [left])).to.equal(DeviceStatus.InvalidProof);
    });

    it(`refuses a proof one element too short, even one that leads to the root (${name})`, async function () {
      const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
      const [h0, h1, h2] = serialIds(3, { prefix: "SHALLOW-" }).map(deviceIdHash);
      // Device 0 of 4 has a two-element proof; here its leaf sits one level higher.
      const rest = pair(leafHash(1, h1), leafHash(2, h2));
      const root = pair(leafHash(0, h0), rest);
      await devices.connect(manufacturer).registerBatch(root, 4, BPC_PER_DEVICE);
      if (pair === sortedHashPair) {
        expect(sortedPairRoot(leafHash(0, h0), [rest])).to.equal(root);
      }
      expect(await devices.deviceStatus(1, 0, h0, [rest])).to.equal(DeviceStatus.InvalidProof);
    });
  }

  it("refuses a valid proof with an element added or taken away", async function () {
    const { devices, first, second } = await loadFixture(deployWithBatches);
    for (const [batchId, tree] of [
      [1, first],
      [2, second],
    ]) {
      for (let index = 0; index < tree.count; index += 1) {
        const proof = tree.proof(index);
        expect(await devices.isLicensed(batchId, index, tree.idHashes[index], proof)).to.equal(true);
        const changed = [
          [...proof, ethers.ZeroHash],
          [...proof, tree.root],
          [...proof, proof[proof.length - 1]],
          proof.slice(0, -1),
          proof.slice(1),
        ];
        for (const wrong of changed) {
          expect(await devices.deviceStatus(batchId, index, tree.idHashes[index], wrong)).to.equal(
            DeviceStatus.InvalidProof,
          );
        }
      }
    }
  });

  it("tells a left node from a right one", async function () {
    const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
    // Two devices whose leaves sort right before left: sorted pairs hash them as (1, 0).
    let tree;
    for (let n = 0; ; n += 1) {
      tree = treeOf(serialIds(2, { prefix: `SWAP${n}-` }));
      if (BigInt(tree.leaf(1)) < BigInt(tree.leaf(0))) break;
    }
    const swapped = hashPair(tree.leaf(1), tree.leaf(0));
    expect(tree.root).to.equal(hashPair(tree.leaf(0), tree.leaf(1)));
    await devices.connect(manufacturer).registerBatch(tree.root, 2, BPC_PER_DEVICE);
    await devices.connect(manufacturer).registerBatch(swapped, 2, BPC_PER_DEVICE);
    for (const index of [0, 1]) {
      const proof = tree.proof(index);
      expect(await devices.deviceStatus(1, index, tree.idHashes[index], proof)).to.equal(DeviceStatus.Licensed);
      expect(await devices.deviceStatus(2, index, tree.idHashes[index], proof)).to.equal(DeviceStatus.InvalidProof);
    }
  });

  it("refuses a tree hashed right before left and proofs with their siblings swapped", async function () {
    const { devices, manufacturer, first } = await loadFixture(deployWithBatches);
    const mirrored = treeOfLeaves(first.levels[0], (left, right) => hashPair(right, left));
    await devices.connect(manufacturer).registerBatch(mirrored.root, first.count, BPC_PER_DEVICE);
    for (let index = 0; index < first.count; index += 1) {
      for (const proof of [first.proof(index), mirrored.proof(index)]) {
        expect(await devices.deviceStatus(3, index, first.idHashes[index], proof)).to.equal(
          DeviceStatus.InvalidProof,
        );
      }
      const proof = first.proof(index);
      if (proof.length >= 2) {
        const swapped = [proof[1], proof[0], ...proof.slice(2)];
        expect(await devices.deviceStatus(1, index, first.idHashes[index], swapped)).to.equal(
          DeviceStatus.InvalidProof,
        );
      }
    }
  });
});
