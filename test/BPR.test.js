// BPR: one per holder, bound to its holder (ERC-5192), records how each licence
// was obtained; only the gate role grants, extends and ends licences.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { deployPoolWithMembers, THRESHOLDS, FEE_LICENCE } = require("./fixtures");
const { Tier, LicenceKind } = require("../scripts/lib/pool-enums");

const ERC5192_INTERFACE_ID = "0xb45a3c0e";

// The wired pool, plus a test account holding BPR.GATE_ROLE so the token's own
// rules can be driven directly, next to the real gate.
async function deployPoolWithGateOperator() {
  const pool = await deployPoolWithMembers();
  const [gateOperator, holder, other, ...users] = pool.users;
  await pool.bpr.connect(pool.council).grantRole(await pool.bpr.GATE_ROLE(), gateOperator.address);
  return { ...pool, gateOperator, holder, other, users };
}

describe("BPR", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployPoolWithGateOperator));
    this.asGate = this.bpr.connect(this.gateOperator);
  });

  describe("metadata and interfaces", function () {
    it("has the pool's name and symbol", async function () {
      expect(await this.bpr.name()).to.equal("Blockchain Patent Right");
      expect(await this.bpr.symbol()).to.equal("BPR");
    });

    it("declares ERC-5192 under 0xb45a3c0e, the selector of locked(uint256)", async function () {
      expect(ethers.id("locked(uint256)").slice(0, 10)).to.equal(ERC5192_INTERFACE_ID);
      expect(await this.bpr.supportsInterface(ERC5192_INTERFACE_ID)).to.equal(true);
    });

    it("declares ERC-721, ERC-165 and IAccessControl and nothing unrelated", async function () {
      expect(await this.bpr.supportsInterface("0x80ac58cd")).to.equal(true);
      expect(await this.bpr.supportsInterface("0x01ffc9a7")).to.equal(true);
      expect(await this.bpr.supportsInterface("0x7965db0b")).to.equal(true);
      expect(await this.bpr.supportsInterface("0xffffffff")).to.equal(false);
    });
  });

  describe("grant", function () {
    it("mints one locked token and records the licence", async function () {
      const expiresAt = BigInt(await time.latest()) + 1000n;
      const tx = await this.asGate.grant(this.holder.address, LicenceKind.Fee, Tier.Medium, 7n, expiresAt);
      await expect(tx).to.emit(this.bpr, "Transfer").withArgs(ethers.ZeroAddress, this.holder.address, 1n);
      await expect(tx).to.emit(this.bpr, "Locked").withArgs(1n);
      await expect(tx)
        .to.emit(this.bpr, "LicenceGranted")
        .withArgs(this.holder.address, 1n, LicenceKind.Fee, Tier.Medium, 7n, expiresAt);
      const receipt = await tx.wait();

      expect(await this.bpr.balanceOf(this.holder.address)).to.equal(1n);
      expect(await this.bpr.ownerOf(1n)).to.equal(this.holder.address);
      expect(await this.bpr.locked(1n)).to.equal(true);
      const licence = await this.bpr.licenceOf(this.holder.address);
      expect(licence.tokenId).to.equal(1n);
      expect(licence.kind).to.equal(BigInt(LicenceKind.Fee));
      expect(licence.tier).to.equal(BigInt(Tier.Medium));
      expect(licence.expiresAt).to.equal(expiresAt);
      expect(licence.sinceBlock).to.equal(BigInt(receipt.blockNumber));
      expect(licence.lockedBpc).to.equal(7n);
    });

    it("reverts BPRBalanceCapExceeded for a second BPR to the same holder", async function () {
      await this.asGate.grant(this.holder.address, LicenceKind.NonProfit, Tier.NonProfit, 0n, 0n);
      await expect(this.asGate.grant(this.holder.address, LicenceKind.Locked, Tier.Small, 1n, 0n))
        .to.be.revertedWithCustomError(this.bpr, "BPRBalanceCapExceeded")
        .withArgs(this.holder.address);
    });

    it("reverts BPRInvalidKind for kind None", async function () {
      await expect(
        this.asGate.grant(this.holder.address, LicenceKind.None, Tier.Small, 0n, 0n),
      ).to.be.revertedWithCustomError(this.bpr, "BPRInvalidKind");
    });

    it("reverts for the zero address", async function () {
      await expect(this.asGate.grant(ethers.ZeroAddress, LicenceKind.NonProfit, Tier.NonProfit, 0n, 0n))
        .to.be.revertedWithCustomError(this.bpr, "ERC721InvalidReceiver")
        .withArgs(ethers.ZeroAddress);
    });

    it("licenses a contract that does not implement IERC721Receiver", async function () {
      const fundAddress = await this.fund.getAddress();
      await this.asGate.grant(fundAddress, LicenceKind.NonProfit, Tier.NonProfit, 0n, 0n);
      expect(await this.bpr.isLicensed(fundAddress)).to.equal(true);
    });

    it("gives every licence a fresh token id, also after an end", async function () {
      await this.asGate.grant(this.holder.address, LicenceKind.NonProfit, Tier.NonProfit, 0n, 0n);
      await this.asGate.grant(this.other.address, LicenceKind.NonProfit, Tier.NonProfit, 0n, 0n);
      await this.asGate.end(this.holder.address);
      await this.asGate.grant(this.holder.address, LicenceKind.NonProfit, Tier.NonProfit, 0n, 0n);
      expect((await this.bpr.licenceOf(this.holder.address)).tokenId).to.equal(3n);
      await expect(this.bpr.ownerOf(1n)).to.be.revertedWithCustomError(this.bpr, "ERC721NonexistentToken").withArgs(1n);
    });
  });

  describe("extend", function () {
    it("sets a new end of term", async function () {
      const start = BigInt(await time.latest());
      await this.asGate.grant(this.holder.address, LicenceKind.Fee, Tier.NonProfit, 0n, start + 10n);
      await expect(this.asGate.extend(this.holder.address, start + 500n))
        .to.emit(this.bpr, "LicenceExtended")
        .withArgs(this.holder.address, 1n, start + 500n);
      expect((await this.bpr.licenceOf(this.holder.address)).expiresAt).to.equal(start + 500n);
    });

    it("reverts BPRNoLicence for an account without BPR", async function () {
      await expect(this.asGate.extend(this.holder.address, 1n))
        .to.be.revertedWithCustomError(this.bpr, "BPRNoLicence")
        .withArgs(this.holder.address);
    });
  });

  describe("end", function () {
    it("burns the token, clears the record and returns it", async function () {
      await this.asGate.grant(this.holder.address, LicenceKind.Locked, Tier.Large, 99n, 0n);
      const returned = await this.asGate.end.staticCall(this.holder.address);
      expect(returned.tokenId).to.equal(1n);
      expect(returned.kind).to.equal(BigInt(LicenceKind.Locked));
      expect(returned.tier).to.equal(BigInt(Tier.Large));
      expect(returned.lockedBpc).to.equal(99n);

      const tx = this.asGate.end(this.holder.address);
      await expect(tx).to.emit(this.bpr, "LicenceEnded").withArgs(this.holder.address, 1n);
      await expect(tx).to.emit(this.bpr, "Transfer").withArgs(this.holder.address, ethers.ZeroAddress, 1n);
      expect(await this.bpr.balanceOf(this.holder.address)).to.equal(0n);
      expect(await this.bpr.isLicensed(this.holder.address)).to.equal(false);
      expect((await this.bpr.licenceOf(this.holder.address)).kind).to.equal(BigInt(LicenceKind.None));
      await expect(this.bpr.locked(1n)).to.be.revertedWithCustomError(this.bpr, "ERC721NonexistentToken").withArgs(1n);
    });

    it("reverts BPRNoLicence for an account without BPR", async function () {
      await expect(this.asGate.end(this.holder.address))
        .to.be.revertedWithCustomError(this.bpr, "BPRNoLicence")
        .withArgs(this.holder.address);
    });
  });

  describe("gate role", function () {
    it("is held by the LicenseGate in the deployed pool", async function () {
      expect(await this.bpr.hasRole(await this.bpr.GATE_ROLE(), await this.gate.getAddress())).to.equal(true);
    });

    it("is required to grant, extend and end, for every other account including the council", async function () {
      const gateRole = await this.bpr.GATE_ROLE();
      await this.asGate.grant(this.holder.address, LicenceKind.NonProfit, Tier.NonProfit, 0n, 0n);
      for (const account of [this.council, this.registrar, this.holder]) {
        const asAccount = this.bpr.connect(account);
        await expect(asAccount.grant(this.other.address, LicenceKind.NonProfit, Tier.NonProfit, 0n, 0n))
          .to.be.revertedWithCustomError(this.bpr, "AccessControlUnauthorizedAccount")
          .withArgs(account.address, gateRole);
        await expect(asAccount.extend(this.holder.address, 1n))
          .to.be.revertedWithCustomError(this.bpr, "AccessControlUnauthorizedAccount")
          .withArgs(account.address, gateRole);
        await expect(asAccount.end(this.holder.address))
          .to.be.revertedWithCustomError(this.bpr, "AccessControlUnauthorizedAccount")
          .withArgs(account.address, gateRole);
      }
    });
  });

  describe("non-transferable", function () {
    beforeEach(async function () {
      await this.asGate.grant(this.holder.address, LicenceKind.NonProfit, Tier.NonProfit, 0n, 0n);
      this.asHolder = this.bpr.connect(this.holder);
    });

    it("reverts every transfer by the holder with BPRNonTransferable", async function () {
      const { holder, other } = this;
      const attempts = [
        () => this.asHolder.transferFrom(holder.address, other.address, 1n),
        () => this.asHolder["safeTransferFrom(address,address,uint256)"](holder.address, other.address, 1n),
        () => this.asHolder["safeTransferFrom(address,address,uint256,bytes)"](holder.address, other.address, 1n, "0x"),
      ];
      for (const attempt of attempts) {
        await expect(attempt()).to.be.revertedWithCustomError(this.bpr, "BPRNonTransferable").withArgs(1n);
      }
      expect(await this.bpr.ownerOf(1n)).to.equal(holder.address);
    });

    it("reverts a transfer by the gate role holder too: no one can move a BPR", async function () {
      await expect(this.asGate.transferFrom(this.holder.address, this.other.address, 1n))
        .to.be.revertedWithCustomError(this.bpr, "BPRNonTransferable")
        .withArgs(1n);
    });

    it("reverts moving a BPR onto another holder's", async function () {
      await this.asGate.grant(this.other.address, LicenceKind.NonProfit, Tier.NonProfit, 0n, 0n);
      await expect(this.asHolder.transferFrom(this.holder.address, this.other.address, 1n))
        .to.be.revertedWithCustomError(this.bpr, "BPRNonTransferable")
        .withArgs(1n);
    });

    it("reverts approve and setApprovalForAll with BPRNonTransferable", async function () {
      await expect(this.asHolder.approve(this.other.address, 1n))
        .to.be.revertedWithCustomError(this.bpr, "BPRNonTransferable")
        .withArgs(1n);
      await expect(this.asHolder.setApprovalForAll(this.other.address, true))
        .to.be.revertedWithCustomError(this.bpr, "BPRNonTransferable")
        .withArgs(0n);
      expect(await this.bpr.getApproved(1n)).to.equal(ethers.ZeroAddress);
      expect(await this.bpr.isApprovedForAll(this.holder.address, this.other.address)).to.equal(false);
    });

    it("reports every existing token as locked and reverts for unknown tokens", async function () {
      expect(await this.bpr.locked(1n)).to.equal(true);
      await expect(this.bpr.locked(2n)).to.be.revertedWithCustomError(this.bpr, "ERC721NonexistentToken").withArgs(2n);
    });
  });

  describe("isLicensed", function () {
    it("is false for an account that never held a BPR", async function () {
      expect(await this.bpr.isLicensed(this.holder.address)).to.equal(false);
    });

    it("is true until the second of expiry, then false while the expired token remains", async function () {
      const expiresAt = BigInt(await time.latest()) + 100n;
      await this.asGate.grant(this.holder.address, LicenceKind.Fee, Tier.NonProfit, 0n, expiresAt);
      await time.increaseTo(expiresAt - 1n);
      expect(await this.bpr.isLicensed(this.holder.address)).to.equal(true);
      await time.increaseTo(expiresAt);
      expect(await this.bpr.isLicensed(this.holder.address)).to.equal(false);
      expect(await this.bpr.balanceOf(this.holder.address)).to.equal(1n);
    });

    it("has no term for licences with expiresAt zero", async function () {
      await this.asGate.grant(this.holder.address, LicenceKind.Locked, Tier.Small, 1n, 0n);
      await time.increase(10 * 365 * 24 * 60 * 60);
      expect(await this.bpr.isLicensed(this.holder.address)).to.equal(true);
    });
  });

  describe("records how each licence was obtained through the gate", function () {
    it("Locked, with tier and locked amount, for a threshold licence", async function () {
      const amount = THRESHOLDS[Tier.Medium] + 5n;
      await this.gate.connect(this.medium).acquire(amount);
      const licence = await this.bpr.licenceOf(this.medium.address);
      expect(licence.kind).to.equal(BigInt(LicenceKind.Locked));
      expect(licence.tier).to.equal(BigInt(Tier.Medium));
      expect(licence.lockedBpc).to.equal(amount);
      expect(licence.expiresAt).to.equal(0n);
    });

    it("NonProfit, locking nothing, for a non-profit member", async function () {
      await this.gate.connect(this.nonProfit).acquire(0n);
      const licence = await this.bpr.licenceOf(this.nonProfit.address);
      expect(licence.kind).to.equal(BigInt(LicenceKind.NonProfit));
      expect(licence.tier).to.equal(BigInt(Tier.NonProfit));
      expect(licence.lockedBpc).to.equal(0n);
      expect(licence.expiresAt).to.equal(0n);
    });

    it("Fee, with its term, for a fee licence; isLicensed turns false when it expires", async function () {
      const tx = await this.gate.connect(this.outsider).buyFeeLicence();
      const purchasedAt = BigInt((await ethers.provider.getBlock((await tx.wait()).blockNumber)).timestamp);
      const licence = await this.bpr.licenceOf(this.outsider.address);
      expect(licence.kind).to.equal(BigInt(LicenceKind.Fee));
      expect(licence.lockedBpc).to.equal(0n);
      expect(licence.expiresAt).to.equal(purchasedAt + BigInt(FEE_LICENCE.termSeconds));
      expect(await this.bpr.isLicensed(this.outsider.address)).to.equal(true);
      await time.increaseTo(licence.expiresAt);
      expect(await this.bpr.isLicensed(this.outsider.address)).to.equal(false);
    });
  });
});
