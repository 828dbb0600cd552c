// DeviceLicenses: BPC conservation over a random sequence of operations, and registration gas.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { deployDeviceLicenses, serialIds, treeOf } = require("./fixtures");

/** A small deterministic generator (mulberry32), so a failure replays exactly. */
function generator(seed) {
  let state = seed >>> 0;
  return function next(bound) {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) % bound);
  };
}

async function embeddedBpc(devices) {
  let total = 0n;
  const count = await devices.batchCount();
  for (let batchId = 1n; batchId <= count; batchId += 1n) {
    const batch = await devices.batchOf(batchId);
    total += batch.deviceCount * batch.bpcPerDevice;
  }
  return total;
}

describe("DeviceLicenses: BPC conservation", function () {
  it("keeps balance == sum over batches of deviceCount × bpcPerDevice, and supply unchanged", async function () {
    const fixture = await loadFixture(deployDeviceLicenses);
    const { devices, bpc, registrar, manufacturer, rival } = fixture;
    const devicesAddress = await devices.getAddress();
    const supply = await bpc.totalSupply();
    const makers = [manufacturer, rival];
    const paidBy = new Map(makers.map((maker) => [maker.address, 0n]));
    const startBalance = new Map();
    for (const maker of makers) startBalance.set(maker.address, await bpc.balanceOf(maker.address));
    const next = generator(20261121);

    for (let step = 0; step < 60; step += 1) {
      const maker = makers[next(2)];
      const batchCount = Number(await devices.batchCount());
      const action = batchCount === 0 ? 0 : next(5);
      if (action <= 1) {
        const count = 1 + next(40);
        const perDevice = BigInt(1 + next(1_000_000));
        const tree = treeOf(serialIds(count, { prefix: `S${step}-` }));
        await devices.connect(maker).registerBatch(tree.root, count, perDevice);
        paidBy.set(maker.address, paidBy.get(maker.address) + BigInt(count) * perDevice);
      } else if (action === 2) {
        const batchId = 1 + next(batchCount);
        const batch = await devices.batchOf(batchId);
        const owner = makers.find((m) => m.address === batch.manufacturer);
        const added = BigInt(1 + next(1000));
        await devices.connect(owner).topUp(batchId, added);
        paidBy.set(owner.address, paidBy.get(owner.address) + batch.deviceCount * added);
      } else if (action === 3) {
        const batchId = 1 + next(batchCount);
        const index = next(Number((await devices.batchOf(batchId)).deviceCount));
        if (!(await devices.isRevoked(batchId, index))) await devices.connect(registrar).revokeDevices(batchId, [index]);
      } else {
        const batchId = 1 + next(batchCount);
        const suspended = (await devices.batchOf(batchId)).status === 2n;
        await devices.connect(registrar)[suspended ? "reinstateBatch" : "suspendBatch"](batchId);
      }
      expect(await bpc.balanceOf(devicesAddress)).to.equal(await embeddedBpc(devices), `after step ${step}`);
    }
    for (const maker of makers) {
      expect(await bpc.balanceOf(maker.address)).to.equal(startBalance.get(maker.address) - paidBy.get(maker.address));
    }
    expect(await bpc.totalSupply()).to.equal(supply);
    expect(await devices.batchCount()).to.be.greaterThan(10n);
  });
});

describe("DeviceLicenses: registration gas", function () {
  it("registers 100,000 devices for at most 2 gas per device, the same as one device", async function () {
    const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
    // Warm the contract's BPC balance and the batch counter, as any batch after the first finds them.
    const small = treeOf(serialIds(1, { prefix: "warm-" }));
    await devices.connect(manufacturer).registerBatch(small.root, 1, 1);

    const one = treeOf(serialIds(1));
    const oneGas = (await (await devices.connect(manufacturer).registerBatch(one.root, 1, 1)).wait()).gasUsed;
    const root = ethers.id("a root of 100,000 devices: registration cannot tell it from any other");
    const bigGas = (await (await devices.connect(manufacturer).registerBatch(root, 100_000, 1)).wait()).gasUsed;
    expect(bigGas).to.be.at.most(200_000n);
    // Only calldata bytes and the transferred amount differ.
    expect(bigGas > oneGas ? bigGas - oneGas : oneGas - bigGas).to.be.below(200n);
  });
});
