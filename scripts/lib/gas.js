// Gas measurements of the pool contracts' deployments and main operations,
// shared by scripts/gas-snapshot.js (writes gas-snapshot.json and the README
// table) and test/GasSnapshot.test.js (fails when a number moves).
//
// Gas on the Hardhat network is deterministic when the state is: every
// account here comes from a fixed private key and deploys with nonce 0, so
// contract addresses (and thus calldata) never depend on what ran before.
// Run the measurement on a chain where those accounts are unused; the test
// wraps it in an EVM snapshot and reverts afterwards.
const { deployPool } = require("./deploy-pool");
const { Tier } = require("./pool-enums");

/** What is measured, in snapshot and table order. */
const MEASUREMENTS = Object.freeze([
  ["deploy BPC", "Deploy BPC"],
  ["deploy BPR", "Deploy BPR"],
  ["deploy PoolRegistry", "Deploy PoolRegistry"],
  ["deploy Fund", "Deploy Fund"],
  ["deploy LicenseGate", "Deploy LicenseGate"],
  ["PoolRegistry.admit", "Admit a member"],
  ["BPC.mint", "Mint BPC to an account holding none"],
  ["BPC.mintOnce", "Mint a contribution's BPC once under its key"],
  ["BPC.transfer", "Transfer BPC to an account holding none"],
  ["LicenseGate.acquire (non-profit)", "Acquire a free non-profit licence"],
  ["LicenseGate.acquire (threshold)", "Acquire a threshold licence, locking BPC"],
  ["LicenseGate.release", "Release a threshold licence, BPC returned"],
  ["LicenseGate.buyFeeLicence", "Buy a fee licence, fee paid into the Fund"],
  ["LicenseGate.renewFeeLicence", "Renew a running fee licence"],
  ["LicenseGate.revoke", "Revoke an expelled member's threshold licence"],
  ["Fund.payout (1 recipient)", "Pay royalties to one account holding no BPC"],
  ["Fund.payout (10 recipients)", "Pay royalties to ten accounts holding no BPC"],
]);

const ROLES = [
  "council",
  "registrar",
  "minter",
  "reference",
  "holder",
  "recipient",
  "nonProfit",
  "outsider",
  "expelled",
  "contributor",
];

const THRESHOLD_BPC = 100n * 10n ** 18n;
const FEE_LICENCE = { priceBpc: 25n * 10n ** 18n, termSeconds: 30 * 24 * 60 * 60 };

async function gasOf(transactionPromise) {
  const receipt = await (await transactionPromise).wait();
  return Number(receipt.gasUsed);
}

// Accounts from fixed keys, funded with ether, so that addresses are the same
// on every run whatever the chain did before.
async function fixedAccounts(ethers) {
  const accounts = {};
  for (const role of ROLES) {
    const wallet = new ethers.Wallet(ethers.id(`gas-snapshot/${role}`), ethers.provider);
    await ethers.provider.send("hardhat_setBalance", [wallet.address, ethers.toQuantity(10n ** 22n)]);
    accounts[role] = wallet;
  }
  const nonce = await ethers.provider.getTransactionCount(accounts.council.address);
  if (nonce !== 0) {
    throw new Error(
      `gas measurement needs a chain where its fixed accounts are unused (council nonce is ${nonce}); ` +
        "run it on a fresh Hardhat network or inside an EVM snapshot",
    );
  }
  return accounts;
}

/**
 * Measure every entry of MEASUREMENTS on the Hardhat network.
 *
 * @param {object} hre The Hardhat runtime environment.
 * @returns {Promise<{compiler: object, hardfork: string, gasUsed: Record<string, number>}>}
 */
async function measureGas(hre) {
  if (hre.network.name !== "hardhat") {
    throw new Error(`gas snapshots are taken on the in-process Hardhat network, not ${hre.network.name}`);
  }
  const { ethers } = hre;
  const accounts = await fixedAccounts(ethers);
  const { council, registrar, minter, reference, holder, recipient, nonProfit, outsider, expelled, contributor } =
    accounts;
  const gasUsed = {};

  const pool = await deployPool(ethers, {
    council,
    registrar,
    minter,
    tierReferences: [{ tier: Tier.Small, reference, thresholdBpc: THRESHOLD_BPC }],
    feeLicence: FEE_LICENCE,
  });
  const { bpc, bpr, registry, fund, gate } = pool;
  const deployed = { BPC: bpc, BPR: bpr, PoolRegistry: registry, Fund: fund, LicenseGate: gate };
  for (const [name, contract] of Object.entries(deployed)) {
    gasUsed[`deploy ${name}`] = await gasOf(contract.deploymentTransaction());
  }
  const gateAddress = await gate.getAddress();
  const asRegistrar = registry.connect(registrar);

  gasUsed["PoolRegistry.admit"] = await gasOf(asRegistrar.admit(holder.address, Tier.Small));
  await asRegistrar.admit(nonProfit.address, Tier.NonProfit);
  await asRegistrar.admit(expelled.address, Tier.Small);

  gasUsed["BPC.mint"] = await gasOf(bpc.connect(minter).mint(holder.address, 10n * THRESHOLD_BPC));
  gasUsed["BPC.mintOnce"] = await gasOf(
    bpc.connect(minter).mintOnce(contributor.address, THRESHOLD_BPC, ethers.id("gas snapshot contribution")),
  );
  gasUsed["BPC.transfer"] = await gasOf(bpc.connect(holder).transfer(recipient.address, THRESHOLD_BPC));
  for (const payer of [outsider, expelled]) await bpc.connect(minter).mint(payer.address, 10n * THRESHOLD_BPC);
  for (const payer of [holder, outsider, expelled]) await bpc.connect(payer).approve(gateAddress, 10n * THRESHOLD_BPC);

  gasUsed["LicenseGate.acquire (non-profit)"] = await gasOf(gate.connect(nonProfit).acquire(0n));
  gasUsed["LicenseGate.acquire (threshold)"] = await gasOf(gate.connect(holder).acquire(THRESHOLD_BPC));
  gasUsed["LicenseGate.release"] = await gasOf(gate.connect(holder).release());
  gasUsed["LicenseGate.buyFeeLicence"] = await gasOf(gate.connect(outsider).buyFeeLicence());
  gasUsed["LicenseGate.renewFeeLicence"] = await gasOf(gate.connect(outsider).renewFeeLicence());

  await gate.connect(expelled).acquire(THRESHOLD_BPC);
  await asRegistrar.expel(expelled.address);
  gasUsed["LicenseGate.revoke"] = await gasOf(gate.connect(registrar).revoke(expelled.address));

  // Royalties out of the licence fees the Fund received above, to fresh fixed addresses.
  const payees = Array.from({ length: 11 }, (_, index) =>
    ethers.getAddress(ethers.dataSlice(ethers.id(`gas-snapshot/payee-${index}`), 12)),
  );
  const asTreasurer = fund.connect(council);
  const bpcAddress = await bpc.getAddress();
  gasUsed["Fund.payout (1 recipient)"] = await gasOf(
    asTreasurer.payout(bpcAddress, payees.slice(0, 1), [10n ** 18n], ethers.id("gas snapshot payout 1")),
  );
  gasUsed["Fund.payout (10 recipients)"] = await gasOf(
    asTreasurer.payout(bpcAddress, payees.slice(1), payees.slice(1).map(() => 10n ** 18n), ethers.id("gas snapshot payout 10")),
  );

  // The settings that change bytecode, hence gas (not the output selection).
  const [{ version, settings }] = hre.config.solidity.compilers;
  return {
    compiler: {
      version,
      optimizer: settings.optimizer,
      evmVersion: settings.evmVersion,
      viaIR: settings.viaIR ?? false,
    },
    hardfork: hre.config.networks.hardhat.hardfork,
    gasUsed: Object.fromEntries(MEASUREMENTS.map(([key]) => [key, gasUsed[key]])),
  };
}

/** Markdown table of a snapshot, one row per measurement. */
function formatMarkdownTable(snapshot) {
  const rows = MEASUREMENTS.map(
    ([key, description]) => `| ${description} | \`${key}\` | ${snapshot.gasUsed[key].toLocaleString("en-US")} |`,
  );
  return ["| Operation | Measurement | Gas used |", "| --- | --- | ---: |", ...rows].join("\n");
}

/**
 * Differences between the committed and a measured snapshot, one line each;
 * empty when they agree exactly.
 */
function compareSnapshots(committed, measured) {
  const differences = [];
  const keys = new Set([...Object.keys(committed.gasUsed ?? {}), ...Object.keys(measured.gasUsed)]);
  for (const key of keys) {
    const before = committed.gasUsed?.[key];
    const after = measured.gasUsed[key];
    if (before === after) continue;
    if (before === undefined) {
      differences.push(`${key}: not in the snapshot, measured ${after}`);
    } else if (after === undefined) {
      differences.push(`${key}: in the snapshot (${before}), no longer measured`);
    } else {
      const change = after - before;
      differences.push(`${key}: snapshot ${before}, measured ${after} (${change > 0 ? "+" : ""}${change})`);
    }
  }
  for (const field of ["compiler", "hardfork"]) {
    const before = JSON.stringify(committed[field]);
    const after = JSON.stringify(measured[field]);
    if (before !== after) differences.push(`${field}: snapshot ${before}, now ${after}`);
  }
  return differences;
}

// The README's gas table lies between these markers (scripts/gas-snapshot.js rewrites it).
const START_MARKER = "<!-- gas-table:start -->";
const END_MARKER = "<!-- gas-table:end -->";

/** The text between the markers (trimmed), or null when the markers are missing. */
function betweenMarkers(text) {
  const start = text.indexOf(START_MARKER);
  const end = text.indexOf(END_MARKER);
  if (start === -1 || end === -1 || end < start) return null;
  return text.slice(start + START_MARKER.length, end).trim();
}

/** `text` with `replacement` between the markers, or null when the markers are missing. */
function replaceBetweenMarkers(text, replacement) {
  if (betweenMarkers(text) === null) return null;
  const start = text.indexOf(START_MARKER);
  const end = text.indexOf(END_MARKER);
  return `${text.slice(0, start + START_MARKER.length)}\n${replacement}\n${text.slice(end)}`;
}

module.exports = {
  MEASUREMENTS,
  measureGas,
  formatMarkdownTable,
  compareSnapshots,
  START_MARKER,
  END_MARKER,
  betweenMarkers,
  replaceBetweenMarkers,
};
