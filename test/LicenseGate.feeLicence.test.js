// LicenseGate, fee side: licences for non-members, paid in BPC into the Fund,
// for a term; renewal from expiry or from now; replacement after expiry.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { deployPoolWithMembers, FEE_LICENCE, THRESHOLDS, toBpc } = require("./fixtures");
const { Tier, Status, LicenceKind } = require("../scripts/lib/pool-enums");

const PRICE = FEE_LICENCE.priceBpc;
const TERM = BigInt(FEE_LICENCE.termSeconds);

async function blockTimestampOf(transaction) {
  const receipt = await (await transaction).wait();
  return BigInt((await ethers.provider.getBlock(receipt.blockNumber)).timestamp);
}

describe("LicenseGate: fee licences", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployPoolWithMembers));
    this.gateAddress = await this.gate.getAddress();
    this.fundAddress = await this.fund.getAddress();
    this.asOutsider = this.gate.connect(this.outsider);
  });

  describe("terms", function () {
    it("are offered as deployed", async function () {
      expect(await this.gate.feeLicencePrice()).to.equal(PRICE);
      expect(await this.gate.feeLicenceTerm()).to.equal(TERM);
    });

    it("are set by the council", async function () {
      await expect(this.gate.connect(this.council).setFeeLicenceTerms(toBpc(40), 3600n))
        .to.emit(this.gate, "FeeLicenceTermsChanged")
        .withArgs(toBpc(40), 3600n);
      expect(await this.gate.feeLicencePrice()).to.equal(toBpc(40));
      expect(await this.gate.feeLicenceTerm()).to.equal(3600n);
    });

    it("are reserved to the council (DEFAULT_ADMIN_ROLE)", async function () {
      for (const caller of [this.registrar, this.outsider]) {
        await expect(this.gate.connect(caller).setFeeLicenceTerms(1n, 1n))
          .to.be.revertedWithCustomError(this.gate, "AccessControlUnauthorizedAccount")
          .withArgs(caller.address, ethers.ZeroHash);
      }
    });
  });

  describe("buyFeeLicence", function () {
    it("pays the price into the Fund and grants a Fee BPR for one term", async function () {
      const tx = this.asOutsider.buyFeeLicence();
      await expect(tx).to.changeTokenBalances(this.bpc, [this.outsider, this.gate, this.fund], [-PRICE, 0n, PRICE]);
      const purchasedAt = await blockTimestampOf(tx);
      const expiresAt = purchasedAt + TERM;
      await expect(tx)
        .to.emit(this.fund, "FundDeposit")
        .withArgs(await this.bpc.getAddress(), this.gateAddress, PRICE, ethers.id("licence-fee"));
      await expect(tx).to.emit(this.gate, "FeeLicencePurchased").withArgs(this.outsider.address, PRICE, expiresAt);
      await expect(tx)
        .to.emit(this.bpr, "LicenceGranted")
        .withArgs(this.outsider.address, 1n, LicenceKind.Fee, Tier.NonProfit, 0n, expiresAt);
      expect(await this.gate.LICENCE_FEE_SOURCE()).to.equal(ethers.id("licence-fee"));
      expect(await this.bpr.isLicensed(this.outsider.address)).to.equal(true);
      // Nothing stays behind in the gate: no BPC, no allowance to the Fund.
      expect(await this.bpc.balanceOf(this.gateAddress)).to.equal(0n);
      expect(await this.bpc.allowance(this.gateAddress, this.fundAddress)).to.equal(0n);
    });

    for (const [status, label, setUp] of [
      [Status.Active, "active", async () => {}],
      [Status.Suspended, "suspended", (registry, registrar, account) => registry.connect(registrar).suspend(account)],
      [Status.Expelled, "expelled", (registry, registrar, account) => registry.connect(registrar).expel(account)],
    ]) {
      it(`reverts GateFeeLicenceForNonMembersOnly for an ${label} member`, async function () {
        await setUp(this.registry, this.registrar, this.small.address);
        await expect(this.gate.connect(this.small).buyFeeLicence())
          .to.be.revertedWithCustomError(this.gate, "GateFeeLicenceForNonMembersOnly")
          .withArgs(this.small.address, status);
      });
    }

    it("reverts GateAlreadyLicensed while the licence runs", async function () {
      const expiresAt = (await blockTimestampOf(this.asOutsider.buyFeeLicence())) + TERM;
      await time.increaseTo(expiresAt - 10n);
      await expect(this.asOutsider.buyFeeLicence())
        .to.be.revertedWithCustomError(this.gate, "GateAlreadyLicensed")
        .withArgs(this.outsider.address);
    });

    it("reverts GateFeeLicenceUnavailable when price or term is zero", async function () {
      for (const [price, term] of [
        [0n, TERM],
        [PRICE, 0n],
      ]) {
        await this.gate.connect(this.council).setFeeLicenceTerms(price, term);
        await expect(this.asOutsider.buyFeeLicence()).to.be.revertedWithCustomError(
          this.gate,
          "GateFeeLicenceUnavailable",
        );
      }
    });

    it("reverts with the token's errors without allowance or balance", async function () {
      await this.bpc.connect(this.outsider).approve(this.gateAddress, 0n);
      await expect(this.asOutsider.buyFeeLicence())
        .to.be.revertedWithCustomError(this.bpc, "ERC20InsufficientAllowance")
        .withArgs(this.gateAddress, 0n, PRICE);

      const [pauper] = this.users;
      await this.bpc.connect(pauper).approve(this.gateAddress, ethers.MaxUint256);
      await expect(this.gate.connect(pauper).buyFeeLicence())
        .to.be.revertedWithCustomError(this.bpc, "ERC20InsufficientBalance")
        .withArgs(pauper.address, 0n, PRICE);
    });
  });

  describe("expiry", function () {
    beforeEach(async function () {
      this.expiresAt = (await blockTimestampOf(this.asOutsider.buyFeeLicence())) + TERM;
    });

    it("ends the licence at the end of the term; the token stays and cannot be released", async function () {
      await time.increaseTo(this.expiresAt);
      expect(await this.bpr.isLicensed(this.outsider.address)).to.equal(false);
      expect(await this.bpr.balanceOf(this.outsider.address)).to.equal(1n);
      await expect(this.asOutsider.release())
        .to.be.revertedWithCustomError(this.gate, "GateFeeLicenceNotReleasable")
        .withArgs(this.outsider.address);
    });

    it("cannot be cut short by release while running either", async function () {
      await expect(this.asOutsider.release())
        .to.be.revertedWithCustomError(this.gate, "GateFeeLicenceNotReleasable")
        .withArgs(this.outsider.address);
    });

    it("lets the holder buy again after expiry, replacing the token", async function () {
      await time.increaseTo(this.expiresAt + 100n);
      const tx = this.asOutsider.buyFeeLicence();
      await expect(tx).to.emit(this.bpr, "LicenceEnded").withArgs(this.outsider.address, 1n);
      await expect(tx).to.changeTokenBalances(this.bpc, [this.outsider, this.fund], [-PRICE, PRICE]);
      const newExpiresAt = (await blockTimestampOf(tx)) + TERM;
      await expect(tx)
        .to.emit(this.bpr, "LicenceGranted")
        .withArgs(this.outsider.address, 2n, LicenceKind.Fee, Tier.NonProfit, 0n, newExpiresAt);
      expect(await this.bpr.balanceOf(this.outsider.address)).to.equal(1n);
      expect(await this.bpr.ownerOf(2n)).to.equal(this.outsider.address);
      expect(await this.bpr.isLicensed(this.outsider.address)).to.equal(true);
    });
  });

  describe("renewFeeLicence", function () {
    beforeEach(async function () {
      this.expiresAt = (await blockTimestampOf(this.asOutsider.buyFeeLicence())) + TERM;
    });

    it("extends a running licence by one term from its expiry", async function () {
      await time.increase(1000);
      const tx = this.asOutsider.renewFeeLicence();
      await expect(tx)
        .to.emit(this.gate, "FeeLicenceRenewed")
        .withArgs(this.outsider.address, PRICE, this.expiresAt + TERM);
      await expect(tx)
        .to.emit(this.bpr, "LicenceExtended")
        .withArgs(this.outsider.address, 1n, this.expiresAt + TERM);
      await expect(tx)
        .to.emit(this.fund, "FundDeposit")
        .withArgs(await this.bpc.getAddress(), this.gateAddress, PRICE, ethers.id("licence-fee"));
      await expect(tx).to.changeTokenBalances(this.bpc, [this.outsider, this.fund], [-PRICE, PRICE]);
      expect((await this.bpr.licenceOf(this.outsider.address)).expiresAt).to.equal(this.expiresAt + TERM);
      expect(await this.bpc.balanceOf(this.fundAddress)).to.equal(PRICE * 2n);
    });

    it("restarts an expired licence from now, keeping the token", async function () {
      await time.increaseTo(this.expiresAt + 5000n);
      const tx = this.asOutsider.renewFeeLicence();
      const renewedAt = await blockTimestampOf(tx);
      await expect(tx)
        .to.emit(this.gate, "FeeLicenceRenewed")
        .withArgs(this.outsider.address, PRICE, renewedAt + TERM);
      const licence = await this.bpr.licenceOf(this.outsider.address);
      expect(licence.expiresAt).to.equal(renewedAt + TERM);
      expect(licence.tokenId).to.equal(1n);
      expect(await this.bpr.isLicensed(this.outsider.address)).to.equal(true);
    });

    it("charges the current price for the current term", async function () {
      const price = toBpc(60);
      const term = 7n * 24n * 3600n;
      await this.gate.connect(this.council).setFeeLicenceTerms(price, term);
      await expect(this.asOutsider.renewFeeLicence())
        .to.emit(this.gate, "FeeLicenceRenewed")
        .withArgs(this.outsider.address, price, this.expiresAt + term);
    });

    it("reverts GateNotFeeLicence for a non-member without licence", async function () {
      const [stranger] = this.users;
      await expect(this.gate.connect(stranger).renewFeeLicence())
        .to.be.revertedWithCustomError(this.gate, "GateNotFeeLicence")
        .withArgs(stranger.address);
    });

    it("reverts GateFeeLicenceForNonMembersOnly for members", async function () {
      await expect(this.gate.connect(this.small).renewFeeLicence())
        .to.be.revertedWithCustomError(this.gate, "GateFeeLicenceForNonMembersOnly")
        .withArgs(this.small.address, Status.Active);
    });

    it("reverts GateFeeLicenceUnavailable when the offer is withdrawn", async function () {
      await this.gate.connect(this.council).setFeeLicenceTerms(0n, TERM);
      await expect(this.asOutsider.renewFeeLicence()).to.be.revertedWithCustomError(
        this.gate,
        "GateFeeLicenceUnavailable",
      );
    });
  });

  describe("a fee licensee admitted as a member", function () {
    beforeEach(async function () {
      this.expiresAt = (await blockTimestampOf(this.asOutsider.buyFeeLicence())) + TERM;
      await this.registry.connect(this.registrar).admit(this.outsider.address, Tier.Small);
    });

    it("cannot lock for a second licence while the fee licence runs, nor renew it", async function () {
      await expect(this.asOutsider.acquire(THRESHOLDS[Tier.Small]))
        .to.be.revertedWithCustomError(this.gate, "GateAlreadyLicensed")
        .withArgs(this.outsider.address);
      await expect(this.asOutsider.renewFeeLicence())
        .to.be.revertedWithCustomError(this.gate, "GateFeeLicenceForNonMembersOnly")
        .withArgs(this.outsider.address, Status.Active);
    });

    it("replaces the expired fee licence with a threshold licence", async function () {
      await time.increaseTo(this.expiresAt);
      const amount = THRESHOLDS[Tier.Small];
      const tx = this.asOutsider.acquire(amount);
      await expect(tx).to.emit(this.bpr, "LicenceEnded").withArgs(this.outsider.address, 1n);
      await expect(tx)
        .to.emit(this.bpr, "LicenceGranted")
        .withArgs(this.outsider.address, 2n, LicenceKind.Locked, Tier.Small, amount, 0n);
      expect(await this.bpr.balanceOf(this.outsider.address)).to.equal(1n);
      expect(await this.bpr.isLicensed(this.outsider.address)).to.equal(true);
    });

    it("loses the fee licence by revocation when expelled, with nothing to return", async function () {
      await this.registry.connect(this.registrar).expel(this.outsider.address);
      const tx = this.gate.connect(this.registrar).revoke(this.outsider.address);
      await expect(tx).to.emit(this.gate, "LicenceRevoked").withArgs(this.outsider.address, 0n);
      await expect(tx).to.not.emit(this.bpc, "Transfer");
      expect(await this.bpr.balanceOf(this.outsider.address)).to.equal(0n);
    });
  });
});
