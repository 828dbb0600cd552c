// Invariant test of BPR and the LicenseGate: seeded random sequences of
// acquire, release, revoke, BPR transfer attempts, fee licence purchases and
// renewals, membership changes, threshold moves and time jumps across several
// accounts. A model (helpers/pool-model.js) predicts every action's outcome:
// success, or the exact custom error and arguments. After every step:
//   - every BPR balance is 0 or 1, and matches the model;
//   - isLicensed and licenceOf match the model (expired fee licences included);
//   - conservation: the gate's BPC balance equals the sum of lockedBpc over the
//     live licences, and every account's and the Fund's BPC is as modelled.
// Every transaction is mined at a timestamp the test sets, so a seed replays
// the same sequence on every run; a failure names the seed, step and last actions.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { deployPool, THRESHOLDS, FEE_LICENCE, toBpc } = require("./fixtures");
const { Tier, Status, LicenceKind } = require("../scripts/lib/pool-enums");
const { PoolModel, fail } = require("./helpers/pool-model");
const { prng } = require("./helpers/prng");

const SEEDS = [1, 2, 3, 5, 8, 13, 21, 34];
const STEPS_PER_SEED = 70;
const DAY = 24 * 60 * 60;
const PAID_TIERS = [Tier.Small, Tier.Medium, Tier.Large];
const ALL_TIERS = [Tier.NonProfit, ...PAID_TIERS];

// How often each action is drawn.
const ACTION_WEIGHTS = [
  [20, "acquire"],
  [10, "release"],
  [5, "revoke"],
  [6, "transferAttempt"],
  [10, "buyFeeLicence"],
  [7, "renewFeeLicence"],
  [1, "admit"],
  [3, "suspend"],
  [3, "reinstate"],
  [2, "expel"],
  [2, "setTier"],
  [9, "timeJump"],
  [5, "moveThreshold"],
  [2, "setFeeLicenceTerms"],
];

// Seven actors: four members (one per tier) and three non-members; the last
// non-member is short of BPC, so failed payments happen too.
async function deployInvariantPool() {
  const pool = await deployPool();
  const actors = pool.users.slice(0, 7);
  const memberTiers = [Tier.Small, Tier.Medium, Tier.Large, Tier.NonProfit];
  const gateAddress = await pool.gate.getAddress();
  const accounts = [];
  for (let index = 0; index < actors.length; index++) {
    const actor = actors[index];
    const isMember = index < memberTiers.length;
    const bpc = index === actors.length - 1 ? toBpc(30) : toBpc(5000);
    if (isMember) await pool.registry.connect(pool.registrar).admit(actor.address, memberTiers[index]);
    await pool.bpc.connect(pool.minter).mint(actor.address, bpc);
    await pool.bpc.connect(actor).approve(gateAddress, ethers.MaxUint256);
    accounts.push({
      address: actor.address,
      status: isMember ? Status.Active : Status.None,
      tier: isMember ? memberTiers[index] : Tier.NonProfit,
      bpc,
    });
  }
  return { ...pool, actors, accounts };
}

/** One seeded sequence of actions against a fresh pool. */
class Sequence {
  constructor(pool, seed) {
    this.pool = pool;
    this.random = prng(seed);
    const fee = { price: FEE_LICENCE.priceBpc, term: BigInt(FEE_LICENCE.termSeconds) };
    this.model = new PoolModel(pool, pool.accounts, THRESHOLDS, fee);
    this.history = [];
  }

  async run(steps) {
    this.clock = BigInt(await time.latest());
    for (let step = 0; step < steps; step++) {
      const action = this.random.weighted(ACTION_WEIGHTS);
      try {
        await this[action]();
        await this.checkInvariants();
      } catch (error) {
        error.message = `step ${step} (${action}): ${error.message}\nlast actions:\n  ${this.history.slice(-8).join("\n  ")}`;
        throw error;
      }
    }
    return this.history;
  }

  // Send a transaction, mined one second after the previous block, and check
  // it against the predicted outcome (reverted transactions are mined too).
  // `mined: false` is for `pure` functions, which ethers calls instead.
  async send(description, outcome, transaction, { mined = true } = {}) {
    this.history.push(`${description} -> ${outcome.error ?? "ok"}`);
    if (mined) {
      this.clock += 1n;
      await time.setNextBlockTimestamp(this.clock);
    }
    if (outcome.error) {
      await expect(transaction())
        .to.be.revertedWithCustomError(outcome.contract, outcome.error)
        .withArgs(...outcome.args);
    } else {
      const receipt = await (await transaction()).wait();
      expect(receipt.status, description).to.equal(1);
      outcome.apply();
    }
  }

  /** The timestamp of the next mined transaction. */
  nextTimestamp() {
    return this.clock + 1n;
  }

  // Mostly an actor for whom the action can succeed, sometimes any actor, so
  // that both the happy paths and every refusal keep being exercised.
  actor(fits, probability = 0.75) {
    const candidates = this.pool.actors.filter((actor) => fits(this.model.account(actor.address)));
    if (candidates.length > 0 && this.random.chance(probability)) return this.random.pick(candidates);
    return this.random.pick(this.pool.actors);
  }

  label(actor) {
    return `actor${this.pool.actors.indexOf(actor)}`;
  }

  async acquire() {
    const actor = this.actor((account) => account.status === Status.Active);
    const account = this.model.account(actor.address);
    const required = account.tier === Tier.NonProfit ? 0n : this.model.thresholds[account.tier];
    const amount = this.random.pick([
      0n,
      required > 0n ? required - 1n : 1n,
      required,
      required + toBpc(this.random.int(300)),
      account.bpc + 1n,
    ]);
    const outcome = this.model.acquire(actor.address, amount, this.nextTimestamp());
    await this.send(`${this.label(actor)} acquire(${amount})`, outcome, () =>
      this.pool.gate.connect(actor).acquire(amount),
    );
  }

  async release() {
    const actor = this.actor((account) => account.licence !== null);
    await this.send(`${this.label(actor)} release()`, this.model.release(actor.address), () =>
      this.pool.gate.connect(actor).release(),
    );
  }

  async revoke() {
    const actor = this.actor((account) => account.status === Status.Expelled && account.licence !== null);
    await this.send(`revoke(${this.label(actor)})`, this.model.revoke(actor.address), () =>
      this.pool.gate.connect(this.pool.registrar).revoke(actor.address),
    );
  }

  async buyFeeLicence() {
    const actor = this.actor((account) => account.status === Status.None);
    const outcome = this.model.buyFeeLicence(actor.address, this.nextTimestamp());
    await this.send(`${this.label(actor)} buyFeeLicence()`, outcome, () =>
      this.pool.gate.connect(actor).buyFeeLicence(),
    );
  }

  async renewFeeLicence() {
    const actor = this.actor((account) => account.licence?.kind === LicenceKind.Fee);
    const outcome = this.model.renewFeeLicence(actor.address, this.nextTimestamp());
    await this.send(`${this.label(actor)} renewFeeLicence()`, outcome, () =>
      this.pool.gate.connect(actor).renewFeeLicence(),
    );
  }

  // Whatever the holder, the target or the token, a BPR never moves.
  async transferAttempt() {
    const actor = this.actor((account) => account.licence !== null);
    const other = this.random.pick(this.pool.actors.filter((candidate) => candidate !== actor));
    const asActor = this.pool.bpr.connect(actor);
    const notTransferable = (tokenId) => fail(this.pool.bpr, "BPRNonTransferable", tokenId);
    const pure = { mined: false };
    const name = this.label(actor);
    const attempts = [[`${name} setApprovalForAll`, 0n, () => asActor.setApprovalForAll(other.address, true), pure]];
    const own = this.model.account(actor.address).licence;
    if (own) {
      const id = own.tokenId;
      const safeTransfer = asActor["safeTransferFrom(address,address,uint256)"];
      attempts.push(
        [`${name} transferFrom own`, id, () => asActor.transferFrom(actor.address, other.address, id)],
        [`${name} safeTransferFrom own`, id, () => safeTransfer(actor.address, other.address, id)],
        [`${name} approve own`, id, () => asActor.approve(other.address, id), pure],
      );
    }
    const holders = this.pool.actors.filter((holder) => holder !== actor && this.model.account(holder.address).licence);
    if (holders.length > 0) {
      const holder = this.random.pick(holders);
      const id = this.model.account(holder.address).licence.tokenId;
      attempts.push([
        `${name} takes ${this.label(holder)}'s`,
        id,
        () => asActor.transferFrom(holder.address, actor.address, id),
      ]);
    }
    const [description, tokenId, transaction, options] = this.random.pick(attempts);
    await this.send(description, notTransferable(tokenId), transaction, options);
  }

  async admit() {
    const actor = this.actor((account) => account.status === Status.None, 0.5);
    const tier = this.random.pick(ALL_TIERS);
    await this.send(`admit(${this.label(actor)}, ${tier})`, this.model.admit(actor.address, tier), () =>
      this.pool.registry.connect(this.pool.registrar).admit(actor.address, tier),
    );
  }

  async changeStatus(action, fromStatuses) {
    const actor = this.actor((account) => fromStatuses.includes(account.status), 0.6);
    await this.send(`${action}(${this.label(actor)})`, this.model.changeStatus(actor.address, action), () =>
      this.pool.registry.connect(this.pool.registrar)[action](actor.address),
    );
  }

  suspend() {
    return this.changeStatus("suspend", [Status.Active]);
  }

  reinstate() {
    return this.changeStatus("reinstate", [Status.Suspended]);
  }

  expel() {
    return this.changeStatus("expel", [Status.Active, Status.Suspended]);
  }

  async setTier() {
    const actor = this.actor((account) => [Status.Active, Status.Suspended].includes(account.status), 0.6);
    const tier = this.random.pick(ALL_TIERS);
    await this.send(`setTier(${this.label(actor)}, ${tier})`, this.model.setTier(actor.address, tier), () =>
      this.pool.registry.connect(this.pool.registrar).setTier(actor.address, tier),
    );
  }

  async timeJump() {
    const seconds = BigInt(
      this.random.pick([60, 3600, DAY, 10 * DAY, 29 * DAY, 31 * DAY, 45 * DAY]) + this.random.int(3600),
    );
    this.clock += seconds;
    this.history.push(`time +${seconds}s`);
    await time.increaseTo(this.clock);
  }

  // The foundation raises a tier's threshold by minting BPC to its reference,
  // or lowers it by moving BPC out of the reference.
  async moveThreshold() {
    const { bpc, minter, council, references } = this.pool;
    const tier = this.random.pick(PAID_TIERS);
    const amount = toBpc(this.random.pick([1, 10, 50, 200]));
    const raise = this.random.chance(0.5) || this.model.thresholds[tier] < amount;
    const reference = references[tier];
    await this.send(
      `threshold[${tier}] ${raise ? "+" : "-"}${amount}`,
      this.model.moveThreshold(tier, raise ? amount : -amount),
      () =>
        raise
          ? bpc.connect(minter).mint(reference.address, amount)
          : bpc.connect(reference).transfer(council.address, amount),
    );
  }

  async setFeeLicenceTerms() {
    // A withdrawn offer (price zero) is rarer than a new price.
    const price = this.random.weighted([
      [1, 0n],
      [2, toBpc(10)],
      [2, FEE_LICENCE.priceBpc],
      [2, toBpc(80)],
    ]);
    const term = BigInt(this.random.pick([7 * DAY, FEE_LICENCE.termSeconds, 90 * DAY]));
    await this.send(`setFeeLicenceTerms(${price}, ${term})`, this.model.setFeeLicenceTerms(price, term), () =>
      this.pool.gate.connect(this.pool.council).setFeeLicenceTerms(price, term),
    );
  }

  async checkInvariants() {
    const { bpc, bpr, gate, fund, actors } = this.pool;
    const now = BigInt(await time.latest());
    expect(now, "chain clock").to.equal(this.clock);
    let lockedOnChain = 0n;
    for (const actor of actors) {
      const name = this.label(actor);
      const expected = this.model.account(actor.address);
      const balance = await bpr.balanceOf(actor.address);
      expect([0n, 1n], `${name} BPR balance in {0,1}`).to.include(balance);
      expect(balance, `${name} BPR balance`).to.equal(expected.licence ? 1n : 0n);
      expect(await bpr.isLicensed(actor.address), `${name} isLicensed`).to.equal(
        this.model.isLicensed(actor.address, now),
      );
      const licence = await bpr.licenceOf(actor.address);
      lockedOnChain += licence.lockedBpc;
      const want = expected.licence ?? { tokenId: 0n, kind: LicenceKind.None, lockedBpc: 0n, expiresAt: 0n };
      expect(licence.kind, `${name} licence kind`).to.equal(BigInt(want.kind));
      expect(licence.tokenId, `${name} token id`).to.equal(want.tokenId);
      expect(licence.lockedBpc, `${name} locked BPC`).to.equal(want.lockedBpc);
      expect(licence.expiresAt, `${name} expiry`).to.equal(want.expiresAt);
      expect(await bpc.balanceOf(actor.address), `${name} BPC`).to.equal(expected.bpc);
    }
    const gateBpc = await bpc.balanceOf(await gate.getAddress());
    expect(gateBpc, "gate BPC = sum of lockedBpc of live licences").to.equal(lockedOnChain);
    expect(gateBpc, "gate BPC = modelled locked total").to.equal(this.model.lockedTotal());
    expect(await bpc.balanceOf(await fund.getAddress()), "fund BPC").to.equal(this.model.fundBpc);
  }
}

describe("BPR and LicenseGate invariants under random sequences", function () {
  for (const seed of SEEDS) {
    it(`hold for seed ${seed} over ${STEPS_PER_SEED} steps`, async function () {
      const pool = await loadFixture(deployInvariantPool);
      await new Sequence(pool, seed).run(STEPS_PER_SEED);
    });
  }
});
