// LicenseGate, threshold side: the threshold read at call time from the tier's
// reference address, acquire and release returning exactly the locked BPC,
// free non-profit licences, revocation of expelled members, and roles.
// Fee licences are in LicenseGate.feeLicence.test.js.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { deployPoolWithMembers, THRESHOLDS, STARTING_BPC, toBpc } = require("./fixtures");
const { Tier, Status, LicenceKind } = require("../scripts/lib/pool-enums");

describe("LicenseGate: threshold licences", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployPoolWithMembers));
    this.gateAddress = await this.gate.getAddress();
  });

  describe("deployment", function () {
    it("refuses a zero address for any constructor argument", async function () {
      const factory = await ethers.getContractFactory("LicenseGate");
      const valid = [
        this.council.address,
        await this.bpc.getAddress(),
        await this.bpr.getAddress(),
        await this.registry.getAddress(),
        await this.fund.getAddress(),
      ];
      for (let position = 0; position < valid.length; position++) {
        const args = valid.map((value, index) => (index === position ? ethers.ZeroAddress : value));
        await expect(factory.deploy(...args)).to.be.revertedWithCustomError(factory, "GateZeroAddress");
      }
    });

    it("points at the pool's contracts", async function () {
      expect(await this.gate.bpc()).to.equal(await this.bpc.getAddress());
      expect(await this.gate.bpr()).to.equal(await this.bpr.getAddress());
      expect(await this.gate.registry()).to.equal(await this.registry.getAddress());
      expect(await this.gate.fund()).to.equal(await this.fund.getAddress());
    });
  });

  describe("threshold", function () {
    it("is the BPC balance at each paid tier's reference address", async function () {
      for (const tier of [Tier.Small, Tier.Medium, Tier.Large]) {
        expect(await this.gate.threshold(tier)).to.equal(THRESHOLDS[tier]);
      }
    });

    it("is zero for non-profit members, with no reference needed", async function () {
      expect(await this.gate.threshold(Tier.NonProfit)).to.equal(0n);
    });

    it("reverts GateTierUnconfigured for a tier without reference address", async function () {
      await this.registry.connect(this.council).setTierReference(Tier.Large, ethers.ZeroAddress);
      await expect(this.gate.threshold(Tier.Large))
        .to.be.revertedWithCustomError(this.gate, "GateTierUnconfigured")
        .withArgs(Tier.Large);
    });

    it("follows BPC moved at the reference: the next acquire pays the new price, existing licences keep theirs", async function () {
      const reference = this.references[Tier.Small];
      const oldThreshold = THRESHOLDS[Tier.Small];
      await this.gate.connect(this.small).acquire(oldThreshold);

      const raise = toBpc(50);
      await this.bpc.connect(this.minter).mint(reference.address, raise);
      const newThreshold = oldThreshold + raise;
      expect(await this.gate.threshold(Tier.Small)).to.equal(newThreshold);

      const [latecomer] = this.users;
      await this.registry.connect(this.registrar).admit(latecomer.address, Tier.Small);
      await this.bpc.connect(this.minter).mint(latecomer.address, newThreshold);
      await this.bpc.connect(latecomer).approve(this.gateAddress, newThreshold);
      await expect(this.gate.connect(latecomer).acquire(oldThreshold))
        .to.be.revertedWithCustomError(this.gate, "GateBelowThreshold")
        .withArgs(latecomer.address, oldThreshold, newThreshold);
      await expect(this.gate.connect(latecomer).acquire(newThreshold))
        .to.emit(this.gate, "ThresholdLicenceAcquired")
        .withArgs(latecomer.address, Tier.Small, newThreshold, newThreshold);

      // The earlier licence is untouched and still returns what was locked.
      expect(await this.bpr.isLicensed(this.small.address)).to.equal(true);
      expect((await this.bpr.licenceOf(this.small.address)).lockedBpc).to.equal(oldThreshold);
      await expect(this.gate.connect(this.small).release()).to.changeTokenBalances(
        this.bpc,
        [this.small, this.gate],
        [oldThreshold, -oldThreshold],
      );
    });

    it("falls when the foundation moves BPC out of the reference", async function () {
      const reference = this.references[Tier.Medium];
      const cut = toBpc(300);
      await this.bpc.connect(reference).transfer(this.council.address, cut);
      const lowered = THRESHOLDS[Tier.Medium] - cut;
      expect(await this.gate.threshold(Tier.Medium)).to.equal(lowered);
      await expect(this.gate.connect(this.medium).acquire(lowered))
        .to.emit(this.gate, "ThresholdLicenceAcquired")
        .withArgs(this.medium.address, Tier.Medium, lowered, lowered);
    });
  });

  describe("acquire", function () {
    it("locks the amount in the gate and grants a Locked BPR", async function () {
      const amount = THRESHOLDS[Tier.Large];
      const tx = this.gate.connect(this.large).acquire(amount);
      await expect(tx)
        .to.emit(this.gate, "ThresholdLicenceAcquired")
        .withArgs(this.large.address, Tier.Large, amount, THRESHOLDS[Tier.Large]);
      await expect(tx)
        .to.emit(this.bpr, "LicenceGranted")
        .withArgs(this.large.address, 1n, LicenceKind.Locked, Tier.Large, amount, 0n);
      await expect(tx).to.changeTokenBalances(this.bpc, [this.large, this.gate], [-amount, amount]);
      expect(await this.bpr.balanceOf(this.large.address)).to.equal(1n);
      expect(await this.bpr.isLicensed(this.large.address)).to.equal(true);
    });

    it("locks the whole amount offered when it exceeds the threshold", async function () {
      const amount = THRESHOLDS[Tier.Small] * 3n;
      await expect(this.gate.connect(this.small).acquire(amount)).to.changeTokenBalances(
        this.bpc,
        [this.small, this.gate],
        [-amount, amount],
      );
      expect((await this.bpr.licenceOf(this.small.address)).lockedBpc).to.equal(amount);
    });

    it("reverts GateBelowThreshold one base unit short", async function () {
      const short = THRESHOLDS[Tier.Small] - 1n;
      await expect(this.gate.connect(this.small).acquire(short))
        .to.be.revertedWithCustomError(this.gate, "GateBelowThreshold")
        .withArgs(this.small.address, short, THRESHOLDS[Tier.Small]);
    });

    it("reverts GateBelowThreshold for zero even when the reference is empty", async function () {
      const reference = this.references[Tier.Small];
      await this.bpc.connect(reference).transfer(this.council.address, THRESHOLDS[Tier.Small]);
      expect(await this.gate.threshold(Tier.Small)).to.equal(0n);
      await expect(this.gate.connect(this.small).acquire(0n))
        .to.be.revertedWithCustomError(this.gate, "GateBelowThreshold")
        .withArgs(this.small.address, 0n, 0n);
      await this.gate.connect(this.small).acquire(1n);
      expect(await this.bpr.isLicensed(this.small.address)).to.equal(true);
    });

    it("reverts GateAlreadyLicensed for a holder", async function () {
      await this.gate.connect(this.small).acquire(THRESHOLDS[Tier.Small]);
      await expect(this.gate.connect(this.small).acquire(THRESHOLDS[Tier.Small]))
        .to.be.revertedWithCustomError(this.gate, "GateAlreadyLicensed")
        .withArgs(this.small.address);
    });

    it("reverts GateTierUnconfigured when the member's tier has no reference", async function () {
      await this.registry.connect(this.council).setTierReference(Tier.Medium, ethers.ZeroAddress);
      await expect(this.gate.connect(this.medium).acquire(THRESHOLDS[Tier.Medium]))
        .to.be.revertedWithCustomError(this.gate, "GateTierUnconfigured")
        .withArgs(Tier.Medium);
    });

    it("reverts with the token's ERC20InsufficientAllowance without approval", async function () {
      await this.bpc.connect(this.small).approve(this.gateAddress, 0n);
      await expect(this.gate.connect(this.small).acquire(THRESHOLDS[Tier.Small]))
        .to.be.revertedWithCustomError(this.bpc, "ERC20InsufficientAllowance")
        .withArgs(this.gateAddress, 0n, THRESHOLDS[Tier.Small]);
    });

    it("reverts GateNotActiveMember for non-members", async function () {
      await expect(this.gate.connect(this.outsider).acquire(THRESHOLDS[Tier.Small]))
        .to.be.revertedWithCustomError(this.gate, "GateNotActiveMember")
        .withArgs(this.outsider.address, Status.None);
    });

    for (const [status, action, label] of [
      [Status.Suspended, "suspend", "suspended"],
      [Status.Expelled, "expel", "expelled"],
    ]) {
      it(`reverts GateNotActiveMember for ${label} members`, async function () {
        await this.registry.connect(this.registrar)[action](this.small.address);
        await expect(this.gate.connect(this.small).acquire(THRESHOLDS[Tier.Small]))
          .to.be.revertedWithCustomError(this.gate, "GateNotActiveMember")
          .withArgs(this.small.address, status);
      });
    }

    it("keeps the tier recorded at acquisition when the member is re-tiered", async function () {
      await this.gate.connect(this.small).acquire(THRESHOLDS[Tier.Small]);
      await this.registry.connect(this.registrar).setTier(this.small.address, Tier.Large);
      const licence = await this.bpr.licenceOf(this.small.address);
      expect(licence.tier).to.equal(BigInt(Tier.Small));
      expect(await this.bpr.isLicensed(this.small.address)).to.equal(true);
    });
  });

  describe("non-profit members", function () {
    it("acquire a NonProfit licence for free", async function () {
      const tx = this.gate.connect(this.nonProfit).acquire(0n);
      await expect(tx)
        .to.emit(this.gate, "ThresholdLicenceAcquired")
        .withArgs(this.nonProfit.address, Tier.NonProfit, 0n, 0n);
      await expect(tx)
        .to.emit(this.bpr, "LicenceGranted")
        .withArgs(this.nonProfit.address, 1n, LicenceKind.NonProfit, Tier.NonProfit, 0n, 0n);
      await expect(tx).to.changeTokenBalances(this.bpc, [this.nonProfit, this.gate], [0n, 0n]);
      expect(await this.bpr.isLicensed(this.nonProfit.address)).to.equal(true);
    });

    it("reverts GateUnexpectedLock for any amount offered", async function () {
      for (const amount of [1n, toBpc(100)]) {
        await expect(this.gate.connect(this.nonProfit).acquire(amount))
          .to.be.revertedWithCustomError(this.gate, "GateUnexpectedLock")
          .withArgs(this.nonProfit.address, amount);
      }
    });

    it("release gives the BPR back and moves no BPC", async function () {
      await this.gate.connect(this.nonProfit).acquire(0n);
      const tx = this.gate.connect(this.nonProfit).release();
      await expect(tx).to.emit(this.gate, "LicenceReleased").withArgs(this.nonProfit.address, 0n);
      await expect(tx).to.not.emit(this.bpc, "Transfer");
      expect(await this.bpr.balanceOf(this.nonProfit.address)).to.equal(0n);
    });
  });

  describe("release", function () {
    it("returns exactly the locked BPC and burns the BPR", async function () {
      const amount = THRESHOLDS[Tier.Medium] + 12345n;
      await this.gate.connect(this.medium).acquire(amount);
      const tx = this.gate.connect(this.medium).release();
      await expect(tx).to.emit(this.gate, "LicenceReleased").withArgs(this.medium.address, amount);
      await expect(tx).to.emit(this.bpr, "LicenceEnded").withArgs(this.medium.address, 1n);
      await expect(tx).to.changeTokenBalances(this.bpc, [this.medium, this.gate], [amount, -amount]);
      expect(await this.bpc.balanceOf(this.medium.address)).to.equal(STARTING_BPC);
      expect(await this.bpr.balanceOf(this.medium.address)).to.equal(0n);
      expect(await this.bpr.isLicensed(this.medium.address)).to.equal(false);
    });

    it("returns each holder its own amount when several have locked", async function () {
      const amounts = [
        [this.small, THRESHOLDS[Tier.Small] + 1n],
        [this.medium, THRESHOLDS[Tier.Medium] + 2n],
        [this.large, THRESHOLDS[Tier.Large] + 3n],
      ];
      for (const [member, amount] of amounts) await this.gate.connect(member).acquire(amount);
      for (const [member, amount] of amounts) {
        await expect(this.gate.connect(member).release()).to.changeTokenBalance(this.bpc, member, amount);
      }
      expect(await this.bpc.balanceOf(this.gateAddress)).to.equal(0n);
    });

    it("lets the holder acquire again afterwards, with a new token", async function () {
      await this.gate.connect(this.small).acquire(THRESHOLDS[Tier.Small]);
      await this.gate.connect(this.small).release();
      await this.gate.connect(this.small).acquire(THRESHOLDS[Tier.Small]);
      expect((await this.bpr.licenceOf(this.small.address)).tokenId).to.equal(2n);
    });

    it("is open to a suspended member, who gets its BPC back", async function () {
      await this.gate.connect(this.small).acquire(THRESHOLDS[Tier.Small]);
      await this.registry.connect(this.registrar).suspend(this.small.address);
      await expect(this.gate.connect(this.small).release()).to.changeTokenBalance(
        this.bpc,
        this.small,
        THRESHOLDS[Tier.Small],
      );
    });

    it("reverts GateNotLicensed without a licence", async function () {
      await expect(this.gate.connect(this.small).release())
        .to.be.revertedWithCustomError(this.gate, "GateNotLicensed")
        .withArgs(this.small.address);
    });
  });

  describe("revoke", function () {
    beforeEach(async function () {
      this.asRevoker = this.gate.connect(this.registrar);
    });

    it("gives the registrar REVOKER_ROLE in the deployed pool", async function () {
      expect(await this.gate.hasRole(await this.gate.REVOKER_ROLE(), this.registrar.address)).to.equal(true);
    });

    it("ends an expelled member's licence and returns its locked BPC to it", async function () {
      const amount = THRESHOLDS[Tier.Large] + 7n;
      await this.gate.connect(this.large).acquire(amount);
      await this.registry.connect(this.registrar).expel(this.large.address);
      const tx = this.asRevoker.revoke(this.large.address);
      await expect(tx).to.emit(this.gate, "LicenceRevoked").withArgs(this.large.address, amount);
      await expect(tx).to.emit(this.bpr, "LicenceEnded").withArgs(this.large.address, 1n);
      await expect(tx).to.changeTokenBalances(this.bpc, [this.large, this.gate], [amount, -amount]);
      expect(await this.bpr.balanceOf(this.large.address)).to.equal(0n);
      await expect(this.gate.connect(this.large).acquire(amount))
        .to.be.revertedWithCustomError(this.gate, "GateNotActiveMember")
        .withArgs(this.large.address, Status.Expelled);
    });

    it("ends an expelled non-profit member's licence, returning nothing", async function () {
      await this.gate.connect(this.nonProfit).acquire(0n);
      await this.registry.connect(this.registrar).expel(this.nonProfit.address);
      const tx = this.asRevoker.revoke(this.nonProfit.address);
      await expect(tx).to.emit(this.gate, "LicenceRevoked").withArgs(this.nonProfit.address, 0n);
      await expect(tx).to.not.emit(this.bpc, "Transfer");
    });

    it("reverts GateNotExpelled for active, suspended and non-members", async function () {
      await this.gate.connect(this.small).acquire(THRESHOLDS[Tier.Small]);
      await this.gate.connect(this.medium).acquire(THRESHOLDS[Tier.Medium]);
      await this.registry.connect(this.registrar).suspend(this.medium.address);
      for (const [account, status] of [
        [this.small, Status.Active],
        [this.medium, Status.Suspended],
        [this.outsider, Status.None],
      ]) {
        await expect(this.asRevoker.revoke(account.address))
          .to.be.revertedWithCustomError(this.gate, "GateNotExpelled")
          .withArgs(account.address, status);
      }
    });

    it("ends the free licence of a non-profit member moved to a paid tier, which then locks BPC for one", async function () {
      await this.gate.connect(this.nonProfit).acquire(0n);
      await this.registry.connect(this.registrar).setTier(this.nonProfit.address, Tier.Large);
      const tx = this.asRevoker.revoke(this.nonProfit.address);
      await expect(tx).to.emit(this.gate, "LicenceRevoked").withArgs(this.nonProfit.address, 0n);
      await expect(tx).to.not.emit(this.bpc, "Transfer");
      expect(await this.bpr.isLicensed(this.nonProfit.address)).to.equal(false);
      await expect(this.gate.connect(this.nonProfit).acquire(0n))
        .to.be.revertedWithCustomError(this.gate, "GateBelowThreshold")
        .withArgs(this.nonProfit.address, 0n, THRESHOLDS[Tier.Large]);
    });

    it("reverts GateNotExpelled for a free licence still in the non-profit tier, and a locked one re-tiered", async function () {
      await this.gate.connect(this.nonProfit).acquire(0n);
      await this.gate.connect(this.small).acquire(THRESHOLDS[Tier.Small]);
      await this.registry.connect(this.registrar).setTier(this.small.address, Tier.Large);
      for (const account of [this.nonProfit, this.small]) {
        await expect(this.asRevoker.revoke(account.address))
          .to.be.revertedWithCustomError(this.gate, "GateNotExpelled")
          .withArgs(account.address, Status.Active);
      }
    });

    it("reverts GateNotLicensed for an expelled member without licence", async function () {
      await this.registry.connect(this.registrar).expel(this.small.address);
      await expect(this.asRevoker.revoke(this.small.address))
        .to.be.revertedWithCustomError(this.gate, "GateNotLicensed")
        .withArgs(this.small.address);
    });

    it("requires REVOKER_ROLE, which the council and members lack", async function () {
      await this.gate.connect(this.small).acquire(THRESHOLDS[Tier.Small]);
      await this.registry.connect(this.registrar).expel(this.small.address);
      const role = await this.gate.REVOKER_ROLE();
      for (const caller of [this.council, this.small, this.medium]) {
        await expect(this.gate.connect(caller).revoke(this.small.address))
          .to.be.revertedWithCustomError(this.gate, "AccessControlUnauthorizedAccount")
          .withArgs(caller.address, role);
      }
    });
  });
});
