// DeviceLicenses: deployment, batch registration, top-ups and the minimum BPC per device.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { Status } = require("../../scripts/lib/pool-enums");
const {
  BatchStatus,
  BPC_PER_DEVICE,
  deployDeviceLicenses,
  deployWithBatches,
  serialIds,
  toBpc,
  treeOf,
} = require("./fixtures");

const UINT32_MAX = 2n ** 32n - 1n;
const UINT128_MAX = 2n ** 128n - 1n;

describe("DeviceLicenses: deployment", function () {
  it("makes the council the admin and keeps the tokens", async function () {
    const { devices, council, registrar, bpc, bpr, registry } = await loadFixture(deployDeviceLicenses);
    expect(await devices.hasRole(await devices.DEFAULT_ADMIN_ROLE(), council.address)).to.equal(true);
    expect(await devices.hasRole(await devices.REVOKER_ROLE(), registrar.address)).to.equal(true);
    expect(await devices.REVOKER_ROLE()).to.equal(ethers.id("REVOKER_ROLE"));
    expect(await devices.bpc()).to.equal(await bpc.getAddress());
    expect(await devices.bpr()).to.equal(await bpr.getAddress());
    expect(await devices.registry()).to.equal(await registry.getAddress());
    expect(await devices.batchCount()).to.equal(0n);
    expect(await devices.minBpcPerDevice()).to.equal(0n);
  });

  it("refuses a zero address for any constructor argument", async function () {
    const { council, bpc, bpr, registry } = await loadFixture(deployDeviceLicenses);
    const factory = await ethers.getContractFactory("DeviceLicenses");
    const addresses = [
      council.address,
      await bpc.getAddress(),
      await bpr.getAddress(),
      await registry.getAddress(),
    ];
    for (let position = 0; position < addresses.length; position += 1) {
      const args = addresses.map((address, i) => (i === position ? ethers.ZeroAddress : address));
      await expect(factory.deploy(...args)).to.be.revertedWithCustomError(factory, "DevicesZeroAddress");
    }
  });
});

describe("DeviceLicenses: registerBatch", function () {
  it("records the batch, takes count × BPC per device and emits BatchRegistered", async function () {
    const { devices, bpc, manufacturer } = await loadFixture(deployDeviceLicenses);
    const tree = treeOf(serialIds(7));
    const locked = 7n * BPC_PER_DEVICE;
    const registration = devices.connect(manufacturer).registerBatch(tree.root, 7, BPC_PER_DEVICE);
    await expect(registration)
      .to.emit(devices, "BatchRegistered")
      .withArgs(1n, manufacturer.address, tree.root, 7n, BPC_PER_DEVICE, locked);
    await expect(registration).to.changeTokenBalances(bpc, [manufacturer, devices], [-locked, locked]);
    const receipt = await (await registration).wait();

    const batch = await devices.batchOf(1);
    expect(batch.manufacturer).to.equal(manufacturer.address);
    expect(batch.deviceCount).to.equal(7n);
    expect(batch.revokedCount).to.equal(0n);
    expect(batch.status).to.equal(BatchStatus.Active);
    expect(batch.root).to.equal(tree.root);
    expect(batch.bpcPerDevice).to.equal(BPC_PER_DEVICE);
    expect(batch.registeredBlock).to.equal(BigInt(receipt.blockNumber));
    expect(await devices.batchCount()).to.equal(1n);
  });

  it("numbers batches from 1 and returns the new id", async function () {
    const { devices, manufacturer, rival } = await loadFixture(deployDeviceLicenses);
    const tree = treeOf(serialIds(3));
    expect(await devices.connect(manufacturer).registerBatch.staticCall(tree.root, 3, 1)).to.equal(1n);
    await devices.connect(manufacturer).registerBatch(tree.root, 3, 1);
    expect(await devices.connect(rival).registerBatch.staticCall(tree.root, 3, 1)).to.equal(2n);
    await devices.connect(rival).registerBatch(tree.root, 3, 1);
    expect((await devices.batchOf(2)).manufacturer).to.equal(rival.address);
    expect(await devices.batchCount()).to.equal(2n);
  });

  it("refuses accounts without a live BPR", async function () {
    const { devices, unlicensed, outsider } = await loadFixture(deployDeviceLicenses);
    const { root } = treeOf(serialIds(2));
    for (const account of [unlicensed, outsider]) {
      await expect(devices.connect(account).registerBatch(root, 2, BPC_PER_DEVICE))
        .to.be.revertedWithCustomError(devices, "DevicesManufacturerNotLicensed")
        .withArgs(account.address);
    }
  });

  it("refuses a manufacturer whose licence was released, but its devices stay licensed", async function () {
    const { devices, gate, manufacturer } = await loadFixture(deployDeviceLicenses);
    const tree = treeOf(serialIds(4));
    await devices.connect(manufacturer).registerBatch(tree.root, 4, BPC_PER_DEVICE);
    await gate.connect(manufacturer).release();
    await expect(devices.connect(manufacturer).registerBatch(tree.root, 4, BPC_PER_DEVICE))
      .to.be.revertedWithCustomError(devices, "DevicesManufacturerNotLicensed")
      .withArgs(manufacturer.address);
    // The embedded BPC is the devices' licence, not the manufacturer's BPR.
    expect(await devices.isLicensed(1, 2, tree.idHashes[2], tree.proof(2))).to.equal(true);
  });

  it("accepts a fee licence holder until its term ends", async function () {
    const { devices, gate, bpc, council, minter, outsider } = await loadFixture(deployDeviceLicenses);
    const term = 3600;
    await gate.connect(council).setFeeLicenceTerms(toBpc(5), term);
    await bpc.connect(minter).mint(outsider.address, toBpc(100));
    await bpc.connect(outsider).approve(await gate.getAddress(), toBpc(5));
    await gate.connect(outsider).buyFeeLicence();
    await bpc.connect(outsider).approve(await devices.getAddress(), ethers.MaxUint256);
    const { root } = treeOf(serialIds(2, { namespace: "outsider" }));
    await expect(devices.connect(outsider).registerBatch(root, 2, 1)).to.emit(devices, "BatchRegistered");
    await time.increase(term);
    await expect(devices.connect(outsider).registerBatch(root, 2, 1))
      .to.be.revertedWithCustomError(devices, "DevicesManufacturerNotLicensed")
      .withArgs(outsider.address);
  });

  it("refuses a zero root", async function () {
    const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
    await expect(
      devices.connect(manufacturer).registerBatch(ethers.ZeroHash, 1, BPC_PER_DEVICE),
    ).to.be.revertedWithCustomError(devices, "DevicesZeroRoot");
  });

  it("refuses a device count of zero or above 2^32 - 1", async function () {
    const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
    const { root } = treeOf(serialIds(1));
    for (const count of [0n, UINT32_MAX + 1n, ethers.MaxUint256]) {
      await expect(devices.connect(manufacturer).registerBatch(root, count, 1))
        .to.be.revertedWithCustomError(devices, "DevicesInvalidDeviceCount")
        .withArgs(count);
    }
    await expect(devices.connect(manufacturer).registerBatch(root, UINT32_MAX, 1))
      .to.emit(devices, "BatchRegistered")
      .withArgs(1n, manufacturer.address, root, UINT32_MAX, 1n, UINT32_MAX);
  });

  it("refuses zero BPC per device, and amounts below the foundation's minimum", async function () {
    const { devices, council, manufacturer } = await loadFixture(deployDeviceLicenses);
    const { root } = treeOf(serialIds(2));
    await expect(devices.connect(manufacturer).registerBatch(root, 2, 0))
      .to.be.revertedWithCustomError(devices, "DevicesBpcPerDeviceTooLow")
      .withArgs(0n, 1n);
    await devices.connect(council).setMinBpcPerDevice(BPC_PER_DEVICE);
    await expect(devices.connect(manufacturer).registerBatch(root, 2, BPC_PER_DEVICE - 1n))
      .to.be.revertedWithCustomError(devices, "DevicesBpcPerDeviceTooLow")
      .withArgs(BPC_PER_DEVICE - 1n, BPC_PER_DEVICE);
    await expect(devices.connect(manufacturer).registerBatch(root, 2, BPC_PER_DEVICE)).to.emit(
      devices,
      "BatchRegistered",
    );
  });

  it("refuses BPC per device above 2^128 - 1", async function () {
    const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
    const { root } = treeOf(serialIds(1));
    await expect(devices.connect(manufacturer).registerBatch(root, 1, UINT128_MAX + 1n))
      .to.be.revertedWithCustomError(devices, "DevicesBpcPerDeviceTooHigh")
      .withArgs(UINT128_MAX + 1n);
  });

  it("fails with the token's error when the manufacturer has not approved or lacks BPC", async function () {
    const { devices, bpc, manufacturer } = await loadFixture(deployDeviceLicenses);
    const { root } = treeOf(serialIds(10));
    const devicesAddress = await devices.getAddress();
    const balance = await bpc.balanceOf(manufacturer.address);
    await expect(devices.connect(manufacturer).registerBatch(root, 10, balance))
      .to.be.revertedWithCustomError(bpc, "ERC20InsufficientBalance")
      .withArgs(manufacturer.address, balance, balance * 10n);
    await bpc.connect(manufacturer).approve(devicesAddress, 9n);
    await expect(devices.connect(manufacturer).registerBatch(root, 10, 1))
      .to.be.revertedWithCustomError(bpc, "ERC20InsufficientAllowance")
      .withArgs(devicesAddress, 9n, 10n);
    expect(await devices.batchCount()).to.equal(0n);
  });
});

describe("DeviceLicenses: the manufacturer's membership", function () {
  it("refuses a suspended member that still holds its BPR, and accepts it again once reinstated", async function () {
    const { devices, bpr, registry, registrar, manufacturer } = await loadFixture(deployDeviceLicenses);
    const { root } = treeOf(serialIds(3));
    await registry.connect(registrar).suspend(manufacturer.address);
    expect(await bpr.isLicensed(manufacturer.address)).to.equal(true);
    await expect(devices.connect(manufacturer).registerBatch(root, 3, BPC_PER_DEVICE))
      .to.be.revertedWithCustomError(devices, "DevicesManufacturerNotActive")
      .withArgs(manufacturer.address, Status.Suspended);
    expect(await devices.batchCount()).to.equal(0n);

    await registry.connect(registrar).reinstate(manufacturer.address);
    await expect(devices.connect(manufacturer).registerBatch(root, 3, BPC_PER_DEVICE))
      .to.emit(devices, "BatchRegistered")
      .withArgs(1n, manufacturer.address, root, 3n, BPC_PER_DEVICE, 3n * BPC_PER_DEVICE);
  });

  it("refuses an expelled member whose BPR was not revoked yet", async function () {
    const { devices, bpr, registry, registrar, manufacturer, rival } = await loadFixture(deployDeviceLicenses);
    const { root } = treeOf(serialIds(3));
    await registry.connect(registrar).expel(manufacturer.address);
    await registry.connect(registrar).suspend(rival.address);
    await registry.connect(registrar).expel(rival.address);
    for (const account of [manufacturer, rival]) {
      expect(await bpr.isLicensed(account.address)).to.equal(true);
      await expect(devices.connect(account).registerBatch(root, 3, BPC_PER_DEVICE))
        .to.be.revertedWithCustomError(devices, "DevicesManufacturerNotActive")
        .withArgs(account.address, Status.Expelled);
    }
    expect(await devices.batchCount()).to.equal(0n);
  });

  it("lets a suspended manufacturer top up and revoke, and leaves its devices licensed", async function () {
    const { devices, registry, registrar, manufacturer, first } = await loadFixture(deployWithBatches);
    await registry.connect(registrar).suspend(manufacturer.address);
    await expect(devices.connect(manufacturer).topUp(1, 1))
      .to.emit(devices, "BatchToppedUp")
      .withArgs(1n, 1n, BPC_PER_DEVICE + 1n, 5n);
    await expect(devices.connect(manufacturer).revokeDevices(1, [4]))
      .to.emit(devices, "DeviceRevoked")
      .withArgs(1n, 4n, manufacturer.address);
    expect(await devices.isLicensed(1, 0, first.idHashes[0], first.proof(0))).to.equal(true);
  });
});

describe("DeviceLicenses: topUp", function () {
  it("raises the BPC of every device and takes count × the added amount", async function () {
    const { devices, bpc, manufacturer, second } = await loadFixture(deployWithBatches);
    const added = toBpc(1);
    const paid = BigInt(second.count) * added;
    const topUp = devices.connect(manufacturer).topUp(2, added);
    await expect(topUp)
      .to.emit(devices, "BatchToppedUp")
      .withArgs(2n, added, BPC_PER_DEVICE + added, paid);
    await expect(topUp).to.changeTokenBalances(bpc, [manufacturer, devices], [-paid, paid]);
    expect((await devices.batchOf(2)).bpcPerDevice).to.equal(BPC_PER_DEVICE + added);
    expect((await devices.batchOf(1)).bpcPerDevice).to.equal(BPC_PER_DEVICE);
  });

  it("is allowed below a raised minimum and while the batch is suspended", async function () {
    const { devices, council, registrar, manufacturer } = await loadFixture(deployWithBatches);
    await devices.connect(council).setMinBpcPerDevice(toBpc(10));
    await devices.connect(registrar).suspendBatch(1);
    await expect(devices.connect(manufacturer).topUp(1, 1))
      .to.emit(devices, "BatchToppedUp")
      .withArgs(1n, 1n, BPC_PER_DEVICE + 1n, 5n);
  });

  it("is for the batch's manufacturer only", async function () {
    const { devices, rival, registrar } = await loadFixture(deployWithBatches);
    for (const account of [rival, registrar]) {
      await expect(devices.connect(account).topUp(1, 1))
        .to.be.revertedWithCustomError(devices, "DevicesNotManufacturer")
        .withArgs(1n, account.address);
    }
  });

  it("refuses unknown batches, zero amounts and totals above 2^128 - 1", async function () {
    const { devices, manufacturer } = await loadFixture(deployWithBatches);
    for (const batchId of [0n, 3n]) {
      await expect(devices.connect(manufacturer).topUp(batchId, 1))
        .to.be.revertedWithCustomError(devices, "DevicesUnknownBatch")
        .withArgs(batchId);
    }
    await expect(devices.connect(manufacturer).topUp(1, 0))
      .to.be.revertedWithCustomError(devices, "DevicesZeroTopUp")
      .withArgs(1n);
    const room = UINT128_MAX - BPC_PER_DEVICE;
    for (const added of [room + 1n, ethers.MaxUint256]) {
      await expect(devices.connect(manufacturer).topUp(1, added))
        .to.be.revertedWithCustomError(devices, "DevicesTopUpTooLarge")
        .withArgs(1n, added, room);
    }
  });
});

describe("DeviceLicenses: setMinBpcPerDevice", function () {
  it("is set by the council, with an event", async function () {
    const { devices, council } = await loadFixture(deployDeviceLicenses);
    await expect(devices.connect(council).setMinBpcPerDevice(5))
      .to.emit(devices, "MinBpcPerDeviceChanged")
      .withArgs(0n, 5n);
    await expect(devices.connect(council).setMinBpcPerDevice(0))
      .to.emit(devices, "MinBpcPerDeviceChanged")
      .withArgs(5n, 0n);
    expect(await devices.minBpcPerDevice()).to.equal(0n);
  });

  it("is refused to anyone else", async function () {
    const { devices, registrar, manufacturer } = await loadFixture(deployDeviceLicenses);
    const adminRole = await devices.DEFAULT_ADMIN_ROLE();
    for (const account of [registrar, manufacturer]) {
      await expect(devices.connect(account).setMinBpcPerDevice(1))
        .to.be.revertedWithCustomError(devices, "AccessControlUnauthorizedAccount")
        .withArgs(account.address, adminRole);
    }
  });

  it("leaves batches registered before a raise licensed", async function () {
    const { devices, council, first } = await loadFixture(deployWithBatches);
    await devices.connect(council).setMinBpcPerDevice(toBpc(1));
    expect(await devices.isLicensed(1, 0, first.idHashes[0], first.proof(0))).to.equal(true);
  });
});
