// PoolRegistry: membership records, every status transition and its invalid
// forms, tiers, tier reference addresses and who may change them.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { deployPool } = require("./fixtures");
const { Tier, Status } = require("../scripts/lib/pool-enums");

const STATUS_NAMES = Object.fromEntries(Object.entries(Status).map(([name, value]) => [value, name]));

// Put `account` into `status` the way the registrar would.
async function bringTo(registry, registrar, account, status, tier = Tier.Small) {
  const asRegistrar = registry.connect(registrar);
  if (status === Status.None) return;
  await asRegistrar.admit(account, tier);
  if (status === Status.Suspended) await asRegistrar.suspend(account);
  if (status === Status.Expelled) await asRegistrar.expel(account);
}

// Expected outcome of each status action from each starting status: the new
// status, or the custom error with its arguments (`account` filled in later).
const TRANSITIONS = {
  suspend: {
    [Status.None]: { error: "RegistryNotMember", args: [] },
    [Status.Active]: { to: Status.Suspended },
    [Status.Suspended]: { error: "RegistryInvalidTransition", args: [Status.Suspended, Status.Suspended] },
    [Status.Expelled]: { error: "RegistryInvalidTransition", args: [Status.Expelled, Status.Suspended] },
  },
  reinstate: {
    [Status.None]: { error: "RegistryNotMember", args: [] },
    [Status.Active]: { error: "RegistryInvalidTransition", args: [Status.Active, Status.Active] },
    [Status.Suspended]: { to: Status.Active },
    [Status.Expelled]: { error: "RegistryInvalidTransition", args: [Status.Expelled, Status.Active] },
  },
  expel: {
    [Status.None]: { error: "RegistryNotMember", args: [] },
    [Status.Active]: { to: Status.Expelled },
    [Status.Suspended]: { to: Status.Expelled },
    [Status.Expelled]: { error: "RegistryInvalidTransition", args: [Status.Expelled, Status.Expelled] },
  },
};

describe("PoolRegistry", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployPool));
    [this.account, this.other, this.outsider] = this.users;
    this.asRegistrar = this.registry.connect(this.registrar);
  });

  it("refuses the zero address as council", async function () {
    const factory = await ethers.getContractFactory("PoolRegistry");
    await expect(factory.deploy(ethers.ZeroAddress)).to.be.revertedWithCustomError(factory, "RegistryZeroAddress");
  });

  describe("admit", function () {
    it("records an active member with its tier and admission time", async function () {
      const tx = await this.asRegistrar.admit(this.account.address, Tier.Medium);
      await expect(tx).to.emit(this.registry, "MemberAdmitted").withArgs(this.account.address, Tier.Medium);
      const admittedAt = (await ethers.provider.getBlock((await tx.wait()).blockNumber)).timestamp;
      const member = await this.registry.memberOf(this.account.address);
      expect(member.tier).to.equal(BigInt(Tier.Medium));
      expect(member.status).to.equal(BigInt(Status.Active));
      expect(member.admittedAt).to.equal(BigInt(admittedAt));
      expect(await this.registry.isActiveMember(this.account.address)).to.equal(true);
    });

    it("knows nothing of an account never admitted", async function () {
      const member = await this.registry.memberOf(this.outsider.address);
      expect(member.status).to.equal(BigInt(Status.None));
      expect(member.admittedAt).to.equal(0n);
      expect(await this.registry.isActiveMember(this.outsider.address)).to.equal(false);
    });

    it("reverts RegistryZeroAddress for the zero address", async function () {
      await expect(this.asRegistrar.admit(ethers.ZeroAddress, Tier.Small)).to.be.revertedWithCustomError(
        this.registry,
        "RegistryZeroAddress",
      );
    });

    for (const status of [Status.Active, Status.Suspended, Status.Expelled]) {
      it(`reverts RegistryAlreadyMember for a member in status ${STATUS_NAMES[status]}`, async function () {
        await bringTo(this.registry, this.registrar, this.account.address, status);
        await expect(this.asRegistrar.admit(this.account.address, Tier.Large))
          .to.be.revertedWithCustomError(this.registry, "RegistryAlreadyMember")
          .withArgs(this.account.address);
      });
    }
  });

  describe("status transitions", function () {
    for (const [action, fromStatus] of Object.entries(TRANSITIONS)) {
      for (const [from, outcome] of Object.entries(fromStatus)) {
        const fromName = STATUS_NAMES[from];
        if (outcome.to !== undefined) {
          it(`${action}: ${fromName} -> ${STATUS_NAMES[outcome.to]}`, async function () {
            await bringTo(this.registry, this.registrar, this.account.address, Number(from), Tier.Large);
            await expect(this.asRegistrar[action](this.account.address))
              .to.emit(this.registry, "MemberStatusChanged")
              .withArgs(this.account.address, Number(from), outcome.to);
            const member = await this.registry.memberOf(this.account.address);
            expect(member.status).to.equal(BigInt(outcome.to));
            expect(member.tier).to.equal(BigInt(Tier.Large));
            expect(await this.registry.isActiveMember(this.account.address)).to.equal(outcome.to === Status.Active);
          });
        } else {
          it(`${action}: reverts ${outcome.error} from ${fromName}`, async function () {
            await bringTo(this.registry, this.registrar, this.account.address, Number(from));
            await expect(this.asRegistrar[action](this.account.address))
              .to.be.revertedWithCustomError(this.registry, outcome.error)
              .withArgs(this.account.address, ...outcome.args);
          });
        }
      }
    }

    it("keeps the admission time through suspension and reinstatement", async function () {
      await this.asRegistrar.admit(this.account.address, Tier.Small);
      const admittedAt = (await this.registry.memberOf(this.account.address)).admittedAt;
      await time.increase(3600);
      await this.asRegistrar.suspend(this.account.address);
      await this.asRegistrar.reinstate(this.account.address);
      expect((await this.registry.memberOf(this.account.address)).admittedAt).to.equal(admittedAt);
    });
  });

  describe("setTier", function () {
    for (const status of [Status.Active, Status.Suspended]) {
      it(`moves a ${STATUS_NAMES[status]} member to another tier`, async function () {
        await bringTo(this.registry, this.registrar, this.account.address, status, Tier.Small);
        await expect(this.asRegistrar.setTier(this.account.address, Tier.NonProfit))
          .to.emit(this.registry, "MemberTierChanged")
          .withArgs(this.account.address, Tier.Small, Tier.NonProfit);
        const member = await this.registry.memberOf(this.account.address);
        expect(member.tier).to.equal(BigInt(Tier.NonProfit));
        expect(member.status).to.equal(BigInt(status));
      });
    }

    it("reverts RegistryTierUnchanged for the current tier", async function () {
      await this.asRegistrar.admit(this.account.address, Tier.Medium);
      await expect(this.asRegistrar.setTier(this.account.address, Tier.Medium))
        .to.be.revertedWithCustomError(this.registry, "RegistryTierUnchanged")
        .withArgs(this.account.address, Tier.Medium);
    });

    it("reverts RegistryNotMember for an account never admitted", async function () {
      await expect(this.asRegistrar.setTier(this.outsider.address, Tier.Medium))
        .to.be.revertedWithCustomError(this.registry, "RegistryNotMember")
        .withArgs(this.outsider.address);
    });

    it("reverts RegistryInvalidTransition for an expelled member", async function () {
      await bringTo(this.registry, this.registrar, this.account.address, Status.Expelled);
      await expect(this.asRegistrar.setTier(this.account.address, Tier.Large))
        .to.be.revertedWithCustomError(this.registry, "RegistryInvalidTransition")
        .withArgs(this.account.address, Status.Expelled, Status.Expelled);
    });
  });

  describe("registrar role", function () {
    it("is held by the registrar in the deployed pool", async function () {
      expect(await this.registry.hasRole(await this.registry.REGISTRAR_ROLE(), this.registrar.address)).to.equal(true);
    });

    it("is required for every membership change, the council included", async function () {
      const role = await this.registry.REGISTRAR_ROLE();
      await this.asRegistrar.admit(this.other.address, Tier.Small);
      for (const caller of [this.council, this.account]) {
        const asCaller = this.registry.connect(caller);
        const calls = [
          () => asCaller.admit(this.outsider.address, Tier.Small),
          () => asCaller.setTier(this.other.address, Tier.Large),
          () => asCaller.suspend(this.other.address),
          () => asCaller.reinstate(this.other.address),
          () => asCaller.expel(this.other.address),
        ];
        for (const call of calls) {
          await expect(call())
            .to.be.revertedWithCustomError(this.registry, "AccessControlUnauthorizedAccount")
            .withArgs(caller.address, role);
        }
      }
    });
  });

  describe("setTierReference", function () {
    it("holds the reference address of each paid tier after deployment", async function () {
      for (const [tier, reference] of Object.entries(this.references)) {
        expect(await this.registry.tierReference(Number(tier))).to.equal(reference.address);
      }
      expect(await this.registry.tierReference(Tier.NonProfit)).to.equal(ethers.ZeroAddress);
    });

    it("lets the council move a tier to another reference address", async function () {
      const previous = this.references[Tier.Medium].address;
      await expect(this.registry.connect(this.council).setTierReference(Tier.Medium, this.other.address))
        .to.emit(this.registry, "TierReferenceChanged")
        .withArgs(Tier.Medium, previous, this.other.address);
      expect(await this.registry.tierReference(Tier.Medium)).to.equal(this.other.address);
    });

    it("lets the council unconfigure a tier with the zero address", async function () {
      const previous = this.references[Tier.Large].address;
      await expect(this.registry.connect(this.council).setTierReference(Tier.Large, ethers.ZeroAddress))
        .to.emit(this.registry, "TierReferenceChanged")
        .withArgs(Tier.Large, previous, ethers.ZeroAddress);
      expect(await this.registry.tierReference(Tier.Large)).to.equal(ethers.ZeroAddress);
    });

    it("is reserved to the council (DEFAULT_ADMIN_ROLE), not the registrar", async function () {
      for (const caller of [this.registrar, this.account]) {
        await expect(this.registry.connect(caller).setTierReference(Tier.Small, caller.address))
          .to.be.revertedWithCustomError(this.registry, "AccessControlUnauthorizedAccount")
          .withArgs(caller.address, ethers.ZeroHash);
      }
    });
  });
});
