// An executable model of the PoolRegistry and LicenseGate rules, for the
// invariant test. Each action method predicts the outcome of the matching
// transaction at time `now` (the timestamp of the block it will be mined in):
//   { contract, error, args }  the transaction must revert with this custom error;
//   { apply }                  the transaction must succeed; apply() updates the model.
// The checks run in the same order as in the contracts, so the predicted error
// is the one the chain reports first.
const { Tier, Status, LicenceKind } = require("../../scripts/lib/pool-enums");

function fail(contract, error, ...args) {
  return { contract, error, args };
}

function succeed(apply) {
  return { apply };
}

const STATUS_MOVES = {
  suspend: { from: [Status.Active], to: Status.Suspended },
  reinstate: { from: [Status.Suspended], to: Status.Active },
  expel: { from: [Status.Active, Status.Suspended], to: Status.Expelled },
};

class PoolModel {
  /**
   * @param {{gate: object, bpc: object, registry: object}} contracts Used to name the reverting contract.
   * @param {{address: string, status: number, tier: number, bpc: bigint}[]} accounts The accounts followed.
   * @param {Record<number, bigint>} thresholds BPC at each paid tier's reference.
   * @param {{price: bigint, term: bigint}} fee Fee licence terms.
   */
  constructor(contracts, accounts, thresholds, fee) {
    this.contracts = contracts;
    this.accounts = new Map(
      accounts.map(({ address, status, tier, bpc }) => [address, { status, tier, bpc, licence: null }]),
    );
    this.thresholds = { ...thresholds };
    this.fee = { ...fee };
    this.fundBpc = 0n;
    this.lastTokenId = 0n;
  }

  account(address) {
    return this.accounts.get(address);
  }

  isLicensed(address, now) {
    const { licence } = this.account(address);
    return licence !== null && (licence.expiresAt === 0n || licence.expiresAt > now);
  }

  /** Sum of lockedBpc over the live licences: what the gate must hold. */
  lockedTotal() {
    let total = 0n;
    for (const { licence } of this.accounts.values()) total += licence ? licence.lockedBpc : 0n;
    return total;
  }

  grant(address, kind, tier, lockedBpc, expiresAt) {
    this.lastTokenId += 1n;
    this.account(address).licence = { tokenId: this.lastTokenId, kind, tier, lockedBpc, expiresAt };
  }

  // acquire and buyFeeLicence first end an expired fee licence.
  liveAfterExpiry(address, now) {
    const account = this.account(address);
    const { licence } = account;
    const expiredFee = licence !== null && licence.kind === LicenceKind.Fee && licence.expiresAt <= now;
    const endExpired = () => {
      if (expiredFee) account.licence = null;
    };
    return { live: licence !== null && !expiredFee, endExpired };
  }

  acquire(address, amount, now) {
    const { gate, bpc } = this.contracts;
    const account = this.account(address);
    if (account.status !== Status.Active) return fail(gate, "GateNotActiveMember", address, account.status);
    const { live, endExpired } = this.liveAfterExpiry(address, now);
    if (live) return fail(gate, "GateAlreadyLicensed", address);
    if (account.tier === Tier.NonProfit) {
      if (amount !== 0n) return fail(gate, "GateUnexpectedLock", address, amount);
      return succeed(() => {
        endExpired();
        this.grant(address, LicenceKind.NonProfit, Tier.NonProfit, 0n, 0n);
      });
    }
    const required = this.thresholds[account.tier];
    if (amount === 0n || amount < required) return fail(gate, "GateBelowThreshold", address, amount, required);
    if (account.bpc < amount) return fail(bpc, "ERC20InsufficientBalance", address, account.bpc, amount);
    return succeed(() => {
      endExpired();
      account.bpc -= amount;
      this.grant(address, LicenceKind.Locked, account.tier, amount, 0n);
    });
  }

  release(address) {
    const { gate } = this.contracts;
    const account = this.account(address);
    if (account.licence === null) return fail(gate, "GateNotLicensed", address);
    if (account.licence.kind === LicenceKind.Fee) return fail(gate, "GateFeeLicenceNotReleasable", address);
    return succeed(() => this.returnLocked(account));
  }

  revoke(address) {
    const { gate } = this.contracts;
    const account = this.account(address);
    if (account.status !== Status.Expelled) return fail(gate, "GateNotExpelled", address, account.status);
    if (account.licence === null) return fail(gate, "GateNotLicensed", address);
    return succeed(() => this.returnLocked(account));
  }

  returnLocked(account) {
    account.bpc += account.licence.lockedBpc;
    account.licence = null;
  }

  buyFeeLicence(address, now) {
    const refused = this.refuseFeeLicence(address);
    if (refused) return refused;
    const { live, endExpired } = this.liveAfterExpiry(address, now);
    if (live) return fail(this.contracts.gate, "GateAlreadyLicensed", address);
    return this.payFee(address, () => {
      endExpired();
      this.grant(address, LicenceKind.Fee, Tier.NonProfit, 0n, now + this.fee.term);
    });
  }

  renewFeeLicence(address, now) {
    const refused = this.refuseFeeLicence(address);
    if (refused) return refused;
    const { licence } = this.account(address);
    if (licence === null || licence.kind !== LicenceKind.Fee) {
      return fail(this.contracts.gate, "GateNotFeeLicence", address);
    }
    const start = licence.expiresAt > now ? licence.expiresAt : now;
    return this.payFee(address, () => {
      licence.expiresAt = start + this.fee.term;
    });
  }

  refuseFeeLicence(address) {
    const { gate } = this.contracts;
    if (this.fee.price === 0n || this.fee.term === 0n) return fail(gate, "GateFeeLicenceUnavailable");
    const { status } = this.account(address);
    if (status !== Status.None) return fail(gate, "GateFeeLicenceForNonMembersOnly", address, status);
    return null;
  }

  payFee(address, then) {
    const account = this.account(address);
    const { price } = this.fee;
    if (account.bpc < price) return fail(this.contracts.bpc, "ERC20InsufficientBalance", address, account.bpc, price);
    return succeed(() => {
      account.bpc -= price;
      this.fundBpc += price;
      then();
    });
  }

  admit(address, tier) {
    const account = this.account(address);
    if (account.status !== Status.None) return fail(this.contracts.registry, "RegistryAlreadyMember", address);
    return succeed(() => Object.assign(account, { status: Status.Active, tier }));
  }

  /** @param {"suspend" | "reinstate" | "expel"} action */
  changeStatus(address, action) {
    const { registry } = this.contracts;
    const account = this.account(address);
    if (account.status === Status.None) return fail(registry, "RegistryNotMember", address);
    const { from, to } = STATUS_MOVES[action];
    if (!from.includes(account.status)) return fail(registry, "RegistryInvalidTransition", address, account.status, to);
    return succeed(() => {
      account.status = to;
    });
  }

  setTier(address, tier) {
    const { registry } = this.contracts;
    const account = this.account(address);
    if (account.status === Status.None) return fail(registry, "RegistryNotMember", address);
    if (account.status === Status.Expelled) {
      return fail(registry, "RegistryInvalidTransition", address, Status.Expelled, Status.Expelled);
    }
    if (account.tier === tier) return fail(registry, "RegistryTierUnchanged", address, tier);
    return succeed(() => {
      account.tier = tier;
    });
  }

  moveThreshold(tier, delta) {
    return succeed(() => {
      this.thresholds[tier] += delta;
    });
  }

  setFeeLicenceTerms(price, term) {
    return succeed(() => {
      this.fee = { price, term };
    });
  }
}

module.exports = { PoolModel, fail, succeed };
