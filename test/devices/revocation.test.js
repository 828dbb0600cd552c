// DeviceLicenses: revoking devices (manufacturer and foundation) and suspending batches.
const { expect } = require("chai");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const {
  BatchStatus,
  DeviceStatus,
  deployDeviceLicenses,
  deployWithBatches,
  serialIds,
  treeOf,
} = require("./fixtures");

describe("DeviceLicenses: revokeDevices", function () {
  it("lets the manufacturer revoke devices, one event each, leaving the others licensed", async function () {
    const { devices, manufacturer, second } = await loadFixture(deployWithBatches);
    const revocation = devices.connect(manufacturer).revokeDevices(2, [1, 6]);
    await expect(revocation).to.emit(devices, "DeviceRevoked").withArgs(2n, 1n, manufacturer.address);
    await expect(revocation).to.emit(devices, "DeviceRevoked").withArgs(2n, 6n, manufacturer.address);
    for (let index = 0; index < second.count; index += 1) {
      const revoked = index === 1 || index === 6;
      expect(await devices.isRevoked(2, index)).to.equal(revoked);
      expect(await devices.deviceStatus(2, index, second.idHashes[index], second.proof(index))).to.equal(
        revoked ? DeviceStatus.Revoked : DeviceStatus.Licensed,
      );
    }
    expect((await devices.batchOf(2)).revokedCount).to.equal(2n);
    expect((await devices.batchOf(1)).revokedCount).to.equal(0n);
    expect(await devices.isRevoked(1, 1)).to.equal(false);
  });

  it("lets the foundation's revoker revoke devices of any batch", async function () {
    const { devices, registrar, first } = await loadFixture(deployWithBatches);
    await expect(devices.connect(registrar).revokeDevices(1, [4]))
      .to.emit(devices, "DeviceRevoked")
      .withArgs(1n, 4n, registrar.address);
    expect(await devices.isLicensed(1, 4, first.idHashes[4], first.proof(4))).to.equal(false);
  });

  it("refuses anyone else, including another licensed manufacturer", async function () {
    const { devices, rival, council, outsider } = await loadFixture(deployWithBatches);
    for (const account of [rival, council, outsider]) {
      await expect(devices.connect(account).revokeDevices(1, [0]))
        .to.be.revertedWithCustomError(devices, "DevicesRevocationNotAllowed")
        .withArgs(1n, account.address);
    }
  });

  it("refuses unknown batches, empty lists and indices out of range", async function () {
    const { devices, manufacturer } = await loadFixture(deployWithBatches);
    await expect(devices.connect(manufacturer).revokeDevices(3, [0]))
      .to.be.revertedWithCustomError(devices, "DevicesUnknownBatch")
      .withArgs(3n);
    await expect(devices.connect(manufacturer).revokeDevices(1, []))
      .to.be.revertedWithCustomError(devices, "DevicesNothingToRevoke")
      .withArgs(1n);
    await expect(devices.connect(manufacturer).revokeDevices(1, [0, 5]))
      .to.be.revertedWithCustomError(devices, "DevicesIndexOutOfRange")
      .withArgs(1n, 5n, 5n);
    expect(await devices.isRevoked(1, 0)).to.equal(false);
  });

  it("is final: a second revocation, even within one call, reverts the whole call", async function () {
    const { devices, manufacturer, registrar } = await loadFixture(deployWithBatches);
    await devices.connect(manufacturer).revokeDevices(1, [2]);
    await expect(devices.connect(registrar).revokeDevices(1, [2]))
      .to.be.revertedWithCustomError(devices, "DevicesAlreadyRevoked")
      .withArgs(1n, 2n);
    await expect(devices.connect(manufacturer).revokeDevices(1, [3, 0, 3]))
      .to.be.revertedWithCustomError(devices, "DevicesAlreadyRevoked")
      .withArgs(1n, 3n);
    expect(await devices.isRevoked(1, 3)).to.equal(false);
    expect(await devices.isRevoked(1, 0)).to.equal(false);
    expect((await devices.batchOf(1)).revokedCount).to.equal(1n);
  });

  it("keeps each device's bit to itself across bitmap words", async function () {
    const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
    const tree = treeOf(serialIds(600));
    await devices.connect(manufacturer).registerBatch(tree.root, 600, 1);
    const revoked = [0, 255, 256, 511, 599];
    await devices.connect(manufacturer).revokeDevices(1, revoked);
    for (const index of [0, 1, 254, 255, 256, 257, 510, 511, 512, 598, 599]) {
      expect(await devices.isRevoked(1, index)).to.equal(revoked.includes(index), `device ${index}`);
      expect(await devices.isLicensed(1, index, tree.idHashes[index], tree.proof(index))).to.equal(
        !revoked.includes(index),
      );
    }
    expect((await devices.batchOf(1)).revokedCount).to.equal(5n);
  });
});

describe("DeviceLicenses: suspendBatch and reinstateBatch", function () {
  it("lets the foundation suspend a batch and reinstate it", async function () {
    const { devices, registrar, first, second } = await loadFixture(deployWithBatches);
    await expect(devices.connect(registrar).suspendBatch(1))
      .to.emit(devices, "BatchStatusChanged")
      .withArgs(1n, BatchStatus.Active, BatchStatus.Suspended, registrar.address);
    expect((await devices.batchOf(1)).status).to.equal(BatchStatus.Suspended);
    for (let index = 0; index < first.count; index += 1) {
      expect(await devices.deviceStatus(1, index, first.idHashes[index], first.proof(index))).to.equal(
        DeviceStatus.BatchSuspended,
      );
    }
    expect(await devices.isLicensed(2, 0, second.idHashes[0], second.proof(0))).to.equal(true);

    await expect(devices.connect(registrar).reinstateBatch(1))
      .to.emit(devices, "BatchStatusChanged")
      .withArgs(1n, BatchStatus.Suspended, BatchStatus.Active, registrar.address);
    expect(await devices.isLicensed(1, 0, first.idHashes[0], first.proof(0))).to.equal(true);
  });

  it("refuses the transitions that do not exist", async function () {
    const { devices, registrar } = await loadFixture(deployWithBatches);
    await expect(devices.connect(registrar).reinstateBatch(1))
      .to.be.revertedWithCustomError(devices, "DevicesInvalidTransition")
      .withArgs(1n, BatchStatus.Active, BatchStatus.Active);
    await devices.connect(registrar).suspendBatch(1);
    await expect(devices.connect(registrar).suspendBatch(1))
      .to.be.revertedWithCustomError(devices, "DevicesInvalidTransition")
      .withArgs(1n, BatchStatus.Suspended, BatchStatus.Suspended);
    for (const action of ["suspendBatch", "reinstateBatch"]) {
      await expect(devices.connect(registrar)[action](9))
        .to.be.revertedWithCustomError(devices, "DevicesUnknownBatch")
        .withArgs(9n);
    }
  });

  it("is for REVOKER_ROLE holders only, not the manufacturer or the council", async function () {
    const { devices, manufacturer, council } = await loadFixture(deployWithBatches);
    const role = await devices.REVOKER_ROLE();
    for (const account of [manufacturer, council]) {
      for (const action of ["suspendBatch", "reinstateBatch"]) {
        await expect(devices.connect(account)[action](1))
          .to.be.revertedWithCustomError(devices, "AccessControlUnauthorizedAccount")
          .withArgs(account.address, role);
      }
    }
  });
});
