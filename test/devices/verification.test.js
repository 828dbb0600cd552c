// DeviceLicenses: Merkle proofs built in JavaScript, checked by isLicensed and deviceStatus.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { DeviceStatus, deployDeviceLicenses, deployWithBatches, serialIds, treeOf } = require("./fixtures");
const { hashPair, leafHash, rootFromProof } = require("./merkle");

// The tree over serial:acme:SN0 .. serial:acme:SN4; tests/licenses/test_merkle.py
// checks the same value, so the JavaScript and Python trees agree.
const GOLDEN_ROOT_SN0_TO_SN4 = "0xfbd6eafb6738b91d4eb15865bf44c4ea291f958035364f2d528427772ae648f6";

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
        expect(rootFromProof(tree.leaf(index), proof)).to.equal(tree.root);
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
