// Deploys the five pool contracts and wires their roles, exactly as a
// production deployment does. The Hardhat fixture (test/fixtures.js), the gas
// snapshot and any deployment script use this one module; the Python deployer
// mirrors the same steps, so change both together.
//
// Deployment (all from `deployer`, which defaults to the council; every
// constructor makes the council the DEFAULT_ADMIN_ROLE holder, the deployer
// keeps no role):
//   1. BPC(council)
//   2. BPR(council)
//   3. PoolRegistry(council)
//   4. Fund(council)
//   5. LicenseGate(council, BPC, BPR, PoolRegistry, Fund)
//
// Role wiring (each grantRole sent by the council, in this order):
//   1. BPR.GATE_ROLE                -> LicenseGate   (only the gate grants, extends, ends licences)
//   2. LicenseGate.REVOKER_ROLE     -> registrar     (revokes licences of expelled members)
//   3. BPC.MINTER_ROLE              -> minter        (the foundation's minting account)
//   4. Fund.TREASURER_ROLE          -> treasurer     (pays royalties and expenses; default: the council)
//   5. PoolRegistry.REGISTRAR_ROLE  -> registrar     (admits, re-tiers, suspends, reinstates, expels)
//
// Optional configuration, after the wiring:
//   - for each entry of `tierReferences`: PoolRegistry.setTierReference(tier, reference)
//     by the council, then BPC.mint(reference, thresholdBpc) by the minter when
//     thresholdBpc > 0 (the reference's BPC balance IS the tier's threshold);
//   - `feeLicence`: LicenseGate.setFeeLicenceTerms(priceBpc, termSeconds) by the council.

/**
 * @typedef {import("ethers").Signer} Signer
 * @typedef {{tier: number, reference: Signer | string, thresholdBpc: bigint}} TierReference
 * @typedef {{priceBpc: bigint, termSeconds: number | bigint}} FeeLicenceTerms
 */

async function addressOf(account) {
  return typeof account === "string" ? account : account.getAddress();
}

async function deployContract(ethers, name, deployer, args) {
  const factory = await ethers.getContractFactory(name, deployer);
  const contract = await factory.deploy(...args);
  await contract.waitForDeployment();
  return contract;
}

async function send(transactionPromise) {
  const transaction = await transactionPromise;
  return transaction.wait();
}

/**
 * Deploy BPC, BPR, PoolRegistry, Fund and LicenseGate and wire their roles.
 *
 * @param {object} ethers The hardhat-ethers object (`hre.ethers`).
 * @param {object} accounts
 * @param {Signer} accounts.council Role administrator of every contract.
 * @param {Signer | string} accounts.registrar Holder of REGISTRAR_ROLE and REVOKER_ROLE.
 * @param {Signer | string} accounts.minter Holder of BPC.MINTER_ROLE (a Signer when tierReferences are funded).
 * @param {Signer | string} [accounts.treasurer] Holder of Fund.TREASURER_ROLE (default: council).
 * @param {Signer} [accounts.deployer] Sender of the deployments (default: council).
 * @param {TierReference[]} [accounts.tierReferences] Tier reference addresses to set and fund.
 * @param {FeeLicenceTerms} [accounts.feeLicence] Fee licence terms to offer.
 * @returns {Promise<{bpc: object, bpr: object, registry: object, fund: object, gate: object}>}
 */
async function deployPool(
  ethers,
  { council, registrar, minter, treasurer = council, deployer = council, tierReferences = [], feeLicence },
) {
  if (!council || !registrar || !minter) {
    throw new Error("deployPool needs council, registrar and minter");
  }
  const councilAddress = await addressOf(council);
  const registrarAddress = await addressOf(registrar);
  const minterAddress = await addressOf(minter);
  const treasurerAddress = await addressOf(treasurer);

  const bpc = await deployContract(ethers, "BPC", deployer, [councilAddress]);
  const bpr = await deployContract(ethers, "BPR", deployer, [councilAddress]);
  const registry = await deployContract(ethers, "PoolRegistry", deployer, [councilAddress]);
  const fund = await deployContract(ethers, "Fund", deployer, [councilAddress]);
  const gate = await deployContract(ethers, "LicenseGate", deployer, [
    councilAddress,
    await bpc.getAddress(),
    await bpr.getAddress(),
    await registry.getAddress(),
    await fund.getAddress(),
  ]);

  await send(bpr.connect(council).grantRole(await bpr.GATE_ROLE(), await gate.getAddress()));
  await send(gate.connect(council).grantRole(await gate.REVOKER_ROLE(), registrarAddress));
  await send(bpc.connect(council).grantRole(await bpc.MINTER_ROLE(), minterAddress));
  await send(fund.connect(council).grantRole(await fund.TREASURER_ROLE(), treasurerAddress));
  await send(registry.connect(council).grantRole(await registry.REGISTRAR_ROLE(), registrarAddress));

  for (const { tier, reference, thresholdBpc } of tierReferences) {
    const referenceAddress = await addressOf(reference);
    await send(registry.connect(council).setTierReference(tier, referenceAddress));
    if (thresholdBpc > 0n) {
      if (typeof minter === "string") {
        throw new Error("funding tier references needs the minter as a Signer");
      }
      await send(bpc.connect(minter).mint(referenceAddress, thresholdBpc));
    }
  }
  if (feeLicence) {
    await send(gate.connect(council).setFeeLicenceTerms(feeLicence.priceBpc, feeLicence.termSeconds));
  }

  return { bpc, bpr, registry, fund, gate };
}

module.exports = { deployPool };
