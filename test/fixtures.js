// Shared fixtures for the pool contract tests. Use them with `loadFixture` so
// every test starts from the same snapshot:
//
//   const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
//   const pool = await loadFixture(deployPool);
//
// The contracts are deployed and wired by scripts/lib/deploy-pool.js, the same
// module a real deployment uses, so the tests exercise the production roles.
const { ethers } = require("hardhat");
const lib = require("../scripts/lib/deploy-pool");
const { Tier } = require("../scripts/lib/pool-enums");

/** Whole BPC to base units (18 decimals). */
function toBpc(whole) {
  return ethers.parseUnits(String(whole), 18);
}

const THRESHOLDS = Object.freeze({
  [Tier.Small]: toBpc(100),
  [Tier.Medium]: toBpc(400),
  [Tier.Large]: toBpc(1600),
});

const FEE_LICENCE = Object.freeze({ priceBpc: toBpc(25), termSeconds: 30 * 24 * 60 * 60 });

/** BPC each member and outsider of deployPoolWithMembers starts with. */
const STARTING_BPC = toBpc(10_000);

/**
 * The five contracts, wired like production; the Small, Medium and Large tier
 * references hold THRESHOLDS; fee licences are offered on FEE_LICENCE terms.
 * Signers: council, registrar, minter, one reference signer per paid tier,
 * and `users` (the remaining 14 accounts, no BPC, no membership).
 */
async function deployPool() {
  const [council, registrar, minter, referenceSmall, referenceMedium, referenceLarge, ...users] =
    await ethers.getSigners();
  const references = {
    [Tier.Small]: referenceSmall,
    [Tier.Medium]: referenceMedium,
    [Tier.Large]: referenceLarge,
  };
  const contracts = await lib.deployPool(ethers, {
    council,
    registrar,
    minter,
    tierReferences: Object.entries(references).map(([tier, reference]) => ({
      tier: Number(tier),
      reference,
      thresholdBpc: THRESHOLDS[tier],
    })),
    feeLicence: FEE_LICENCE,
  });
  return { ...contracts, council, registrar, minter, references, users };
}

/**
 * deployPool plus admitted members, one per tier (small, medium, large,
 * nonProfit), and a non-member `outsider`. Each of them holds STARTING_BPC and
 * has approved the gate for an unlimited amount. `users` are the accounts left.
 */
async function deployPoolWithMembers() {
  const pool = await deployPool();
  const { bpc, gate, registry, registrar, minter } = pool;
  const [small, medium, large, nonProfit, outsider, ...users] = pool.users;
  const tiers = [
    [small, Tier.Small],
    [medium, Tier.Medium],
    [large, Tier.Large],
    [nonProfit, Tier.NonProfit],
  ];
  for (const [member, tier] of tiers) {
    await registry.connect(registrar).admit(member.address, tier);
  }
  for (const account of [small, medium, large, nonProfit, outsider]) {
    await bpc.connect(minter).mint(account.address, STARTING_BPC);
    await bpc.connect(account).approve(await gate.getAddress(), ethers.MaxUint256);
  }
  return { ...pool, small, medium, large, nonProfit, outsider, users };
}

module.exports = { deployPool, deployPoolWithMembers, toBpc, THRESHOLDS, FEE_LICENCE, STARTING_BPC };
