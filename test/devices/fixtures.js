// Fixtures for the DeviceLicenses tests. Use them with `loadFixture`:
//
//   const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
//   const { devices, manufacturer } = await loadFixture(deployDeviceLicenses);
//
// The pool is deployed and wired by scripts/lib/deploy-pool.js (production
// roles); DeviceLicenses is added on top of it the way a deployment adds it:
//   DeviceLicenses(council, BPC, BPR, PoolRegistry), then DeviceLicenses.REVOKER_ROLE -> registrar.
const { ethers } = require("hardhat");
const lib = require("../../scripts/lib/deploy-pool");
const { Tier } = require("../../scripts/lib/pool-enums");
const { buildTree, deviceIdHash } = require("./merkle");

/** IDeviceLicenses.BatchStatus, as the ABI encodes it. */
const BatchStatus = Object.freeze({ None: 0, Active: 1, Suspended: 2 });

/** IDeviceLicenses.DeviceStatus, in the order the contract checks. */
const DeviceStatus = Object.freeze({
  Licensed: 0,
  UnknownBatch: 1,
  IndexOutOfRange: 2,
  InvalidProof: 3,
  BatchSuspended: 4,
  Revoked: 5,
});

/** Whole BPC to base units (18 decimals). */
function toBpc(whole) {
  return ethers.parseUnits(String(whole), 18);
}

const SMALL_THRESHOLD = toBpc(100);
/** BPC each manufacturer holds after locking its licence threshold. */
const MANUFACTURER_BPC = toBpc(1_000_000);
/** A per-device amount used throughout: 0.01 BPC. */
const BPC_PER_DEVICE = ethers.parseUnits("0.01", 18);

/** Canonical serial-scheme ids `serial:{namespace}:{prefix}{n}` for n in [0, count). */
function serialIds(count, { namespace = "acme", prefix = "SN" } = {}) {
  return Array.from({ length: count }, (_, n) => `serial:${namespace}:${prefix}${n}`);
}

/** A Merkle tree over canonical ids, with the ids' hashes kept alongside. */
function treeOf(canonicalIds) {
  const idHashes = canonicalIds.map(deviceIdHash);
  return { ...buildTree(idHashes), ids: canonicalIds, idHashes };
}

async function admitAndLicense(pool, account) {
  const { bpc, gate, registry, registrar, minter } = pool;
  await registry.connect(registrar).admit(account.address, Tier.Small);
  await bpc.connect(minter).mint(account.address, SMALL_THRESHOLD + MANUFACTURER_BPC);
  await bpc.connect(account).approve(await gate.getAddress(), SMALL_THRESHOLD);
  await gate.connect(account).acquire(SMALL_THRESHOLD);
}

/**
 * The pool plus DeviceLicenses. Signers: council, registrar (REVOKER_ROLE on
 * DeviceLicenses), minter; `manufacturer` and `rival` are licensed Small members
 * holding MANUFACTURER_BPC with DeviceLicenses approved for any amount;
 * `unlicensed` is a member with BPC and approval but no BPR; `outsider` has nothing.
 */
async function deployDeviceLicenses() {
  const [council, registrar, minter, reference, manufacturer, rival, unlicensed, outsider] =
    await ethers.getSigners();
  const pool = await lib.deployPool(ethers, {
    council,
    registrar,
    minter,
    tierReferences: [{ tier: Tier.Small, reference, thresholdBpc: SMALL_THRESHOLD }],
  });
  const factory = await ethers.getContractFactory("DeviceLicenses", council);
  const devices = await factory.deploy(
    council.address,
    await pool.bpc.getAddress(),
    await pool.bpr.getAddress(),
    await pool.registry.getAddress(),
  );
  await devices.waitForDeployment();
  await devices.connect(council).grantRole(await devices.REVOKER_ROLE(), registrar.address);

  const context = { ...pool, council, registrar, minter };
  for (const account of [manufacturer, rival]) {
    await admitAndLicense(context, account);
  }
  await pool.registry.connect(registrar).admit(unlicensed.address, Tier.Small);
  await pool.bpc.connect(minter).mint(unlicensed.address, MANUFACTURER_BPC);
  const devicesAddress = await devices.getAddress();
  for (const account of [manufacturer, rival, unlicensed]) {
    await pool.bpc.connect(account).approve(devicesAddress, ethers.MaxUint256);
  }
  return { ...context, devices, manufacturer, rival, unlicensed, outsider };
}

/**
 * deployDeviceLicenses plus two registered batches of the manufacturer:
 * batch 1 with 5 devices (`first`) and batch 2 with 8 devices (`second`),
 * both at BPC_PER_DEVICE.
 */
async function deployWithBatches() {
  const fixture = await deployDeviceLicenses();
  const { devices, manufacturer } = fixture;
  const first = treeOf(serialIds(5));
  const second = treeOf(serialIds(8, { prefix: "LOT2-" }));
  await devices.connect(manufacturer).registerBatch(first.root, first.count, BPC_PER_DEVICE);
  await devices.connect(manufacturer).registerBatch(second.root, second.count, BPC_PER_DEVICE);
  return { ...fixture, first, second };
}

module.exports = {
  BatchStatus,
  DeviceStatus,
  deployDeviceLicenses,
  deployWithBatches,
  serialIds,
  treeOf,
  toBpc,
  BPC_PER_DEVICE,
  MANUFACTURER_BPC,
};
