// Fund: tagged deposits from anyone, payouts only by the treasurer, each tag paid once.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { deployPool, toBpc } = require("./fixtures");

const ROYALTIES = ethers.id("royalties-2025-q1");
const ROYALTIES_NEXT = ethers.id("royalties-2025-q2");
const TRADING_FEE = ethers.id("trading-fee");

async function deployFundWithDepositor() {
  const pool = await deployPool();
  const [depositor, alice, bob, carol, ...users] = pool.users;
  await pool.bpc.connect(pool.minter).mint(depositor.address, toBpc(1000));
  await pool.bpc.connect(depositor).approve(await pool.fund.getAddress(), ethers.MaxUint256);
  const quoteToken = await (await ethers.getContractFactory("TestToken")).deploy("Quote", "QUOTE", 6);
  const taxed = await (await ethers.getContractFactory("FeeOnTransferToken")).deploy("Taxed", "TAX");
  return { ...pool, depositor, alice, bob, carol, users, quoteToken, taxed };
}

describe("Fund", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployFundWithDepositor));
    this.fundAddress = await this.fund.getAddress();
    this.bpcAddress = await this.bpc.getAddress();
  });

  describe("deposit", function () {
    it("pulls the amount from the caller and records the source", async function () {
      const amount = toBpc(15);
      const tx = this.fund.connect(this.depositor).deposit(this.bpcAddress, amount, TRADING_FEE);
      await expect(tx)
        .to.emit(this.fund, "FundDeposit")
        .withArgs(this.bpcAddress, this.depositor.address, amount, TRADING_FEE);
      await expect(tx).to.changeTokenBalances(this.bpc, [this.depositor, this.fund], [-amount, amount]);
    });

    it("accepts any ERC-20, such as the quote token", async function () {
      const amount = 2_500_000n;
      await this.quoteToken.mint(this.alice.address, amount);
      await this.quoteToken.connect(this.alice).approve(this.fundAddress, amount);
      await expect(this.fund.connect(this.alice).deposit(await this.quoteToken.getAddress(), amount, TRADING_FEE))
        .to.emit(this.fund, "FundDeposit")
        .withArgs(await this.quoteToken.getAddress(), this.alice.address, amount, TRADING_FEE);
      expect(await this.quoteToken.balanceOf(this.fundAddress)).to.equal(amount);
    });

    it("records what arrived of a token that takes a fee on transfer, not what was sent", async function () {
      const token = await this.taxed.getAddress();
      await this.taxed.setFee(100n); // 1 %
      await this.taxed.mint(this.alice.address, 1_000_000n);
      await this.taxed.connect(this.alice).approve(this.fundAddress, 1_000_000n);
      const tx = this.fund.connect(this.alice).deposit(token, 1_000_000n, TRADING_FEE);
      await expect(tx).to.emit(this.fund, "FundDeposit").withArgs(token, this.alice.address, 990_000n, TRADING_FEE);
      expect(await this.taxed.balanceOf(this.fundAddress)).to.equal(990_000n);
    });

    it("reverts FundZeroAmount when nothing of the deposit arrives", async function () {
      const token = await this.taxed.getAddress();
      await this.taxed.setFee(10_000n); // all of it is taken on the way
      await this.taxed.mint(this.alice.address, 100n);
      await this.taxed.connect(this.alice).approve(this.fundAddress, 100n);
      await expect(
        this.fund.connect(this.alice).deposit(token, 100n, TRADING_FEE),
      ).to.be.revertedWithCustomError(this.fund, "FundZeroAmount");
      expect(await this.taxed.balanceOf(this.alice.address)).to.equal(100n);
    });

    it("refuses a deposit made from inside another deposit's transfer, so nothing is counted twice", async function () {
      const hostile = await (await ethers.getContractFactory("ReentrantToken")).deploy("Hostile", "HOST");
      const token = await hostile.getAddress();
      await hostile.mint(this.alice.address, 1_000n);
      await hostile.connect(this.alice).approve(this.fundAddress, 1_000n);
      await hostile.mint(token, 500n); // the token deposits its own, from inside the transfer
      const inner = this.fund.interface.encodeFunctionData("deposit", [token, 500n, TRADING_FEE]);
      await hostile.arm(this.fundAddress, inner, false);
      const tx = this.fund.connect(this.alice).deposit(token, 1_000n, TRADING_FEE);
      await expect(tx).to.emit(this.fund, "FundDeposit").withArgs(token, this.alice.address, 1_000n, TRADING_FEE);
      expect(await hostile.reentryAttempts()).to.equal(1n);
      expect(await hostile.reentrySuccesses()).to.equal(0n);
      const refusal = this.fund.interface.parseError(await hostile.lastReentryError());
      expect(refusal.name).to.equal("ReentrancyGuardReentrantCall");
      expect(await hostile.balanceOf(this.fundAddress)).to.equal(1_000n);
    });

    it("reverts FundZeroAmount for zero", async function () {
      await expect(
        this.fund.connect(this.depositor).deposit(this.bpcAddress, 0n, TRADING_FEE),
      ).to.be.revertedWithCustomError(this.fund, "FundZeroAmount");
    });

    it("reverts with the token's ERC20InsufficientAllowance without approval", async function () {
      await this.bpc.connect(this.depositor).approve(this.fundAddress, 0n);
      await expect(this.fund.connect(this.depositor).deposit(this.bpcAddress, 1n, TRADING_FEE))
        .to.be.revertedWithCustomError(this.bpc, "ERC20InsufficientAllowance")
        .withArgs(this.fundAddress, 0n, 1n);
    });
  });

  describe("payout", function () {
    beforeEach(async function () {
      await this.fund.connect(this.depositor).deposit(this.bpcAddress, toBpc(100), TRADING_FEE);
      this.asTreasurer = this.fund.connect(this.council);
    });

    it("makes the council the treasurer in the deployed pool", async function () {
      expect(await this.fund.hasRole(await this.fund.TREASURER_ROLE(), this.council.address)).to.equal(true);
    });

    it("pays every recipient its amount, one tagged event each", async function () {
      const recipients = [this.alice.address, this.bob.address, this.carol.address];
      const amounts = [toBpc(10), toBpc(20), toBpc(30)];
      const tx = this.asTreasurer.payout(this.bpcAddress, recipients, amounts, ROYALTIES);
      await expect(tx).to.changeTokenBalances(
        this.bpc,
        [this.fund, this.alice, this.bob, this.carol],
        [-toBpc(60), toBpc(10), toBpc(20), toBpc(30)],
      );
      for (let index = 0; index < recipients.length; index++) {
        await expect(tx)
          .to.emit(this.fund, "FundPayout")
          .withArgs(this.bpcAddress, recipients[index], amounts[index], ROYALTIES);
      }
    });

    it("records the tag and reverts FundTagAlreadyPaid on a second payout with it, paying no one", async function () {
      expect(await this.fund.paidTags(ROYALTIES)).to.equal(false);
      const recipients = [this.alice.address, this.bob.address];
      const amounts = [toBpc(10), toBpc(20)];
      await this.asTreasurer.payout(this.bpcAddress, recipients, amounts, ROYALTIES);
      expect(await this.fund.paidTags(ROYALTIES)).to.equal(true);

      // The same batch sent again, as after a lost receipt: refused, balances unchanged.
      await expect(this.asTreasurer.payout(this.bpcAddress, recipients, amounts, ROYALTIES))
        .to.be.revertedWithCustomError(this.fund, "FundTagAlreadyPaid")
        .withArgs(ROYALTIES);
      // Whatever the token, recipients or amounts: the tag is spent.
      await this.quoteToken.mint(this.fundAddress, 5n);
      await expect(
        this.asTreasurer.payout(await this.quoteToken.getAddress(), [this.carol.address], [5n], ROYALTIES),
      )
        .to.be.revertedWithCustomError(this.fund, "FundTagAlreadyPaid")
        .withArgs(ROYALTIES);
      expect(await this.bpc.balanceOf(this.alice.address)).to.equal(toBpc(10));
      expect(await this.bpc.balanceOf(this.bob.address)).to.equal(toBpc(20));
      expect(await this.bpc.balanceOf(this.fundAddress)).to.equal(toBpc(70));
      expect(await this.quoteToken.balanceOf(this.carol.address)).to.equal(0n);
    });

    it("pays the same recipients again under a different tag", async function () {
      await this.asTreasurer.payout(this.bpcAddress, [this.alice.address], [toBpc(10)], ROYALTIES);
      const tx = this.asTreasurer.payout(this.bpcAddress, [this.alice.address], [toBpc(10)], ROYALTIES_NEXT);
      await expect(tx)
        .to.emit(this.fund, "FundPayout")
        .withArgs(this.bpcAddress, this.alice.address, toBpc(10), ROYALTIES_NEXT);
      await expect(tx).to.changeTokenBalances(this.bpc, [this.fund, this.alice], [-toBpc(10), toBpc(10)]);
      expect(await this.fund.paidTags(ROYALTIES_NEXT)).to.equal(true);
    });

    it("leaves the tag unused when the payout reverts", async function () {
      await expect(
        this.asTreasurer.payout(this.bpcAddress, [this.alice.address], [toBpc(101)], ROYALTIES),
      ).to.be.revertedWithCustomError(this.bpc, "ERC20InsufficientBalance");
      expect(await this.fund.paidTags(ROYALTIES)).to.equal(false);
      await expect(this.asTreasurer.payout(this.bpcAddress, [this.alice.address], [toBpc(100)], ROYALTIES))
        .to.emit(this.fund, "FundPayout")
        .withArgs(this.bpcAddress, this.alice.address, toBpc(100), ROYALTIES);
    });

    it("reverts FundLengthMismatch when the lists differ in length", async function () {
      await expect(this.asTreasurer.payout(this.bpcAddress, [this.alice.address, this.bob.address], [1n], ROYALTIES))
        .to.be.revertedWithCustomError(this.fund, "FundLengthMismatch")
        .withArgs(2n, 1n);
    });

    it("reverts FundEmptyPayout for empty lists, leaving the tag unused", async function () {
      await expect(this.asTreasurer.payout(this.bpcAddress, [], [], ROYALTIES)).to.be.revertedWithCustomError(
        this.fund,
        "FundEmptyPayout",
      );
      expect(await this.fund.paidTags(ROYALTIES)).to.equal(false);
    });

    it("reverts FundZeroRecipient with the index, paying no one", async function () {
      await expect(
        this.asTreasurer.payout(this.bpcAddress, [this.alice.address, ethers.ZeroAddress], [1n, 1n], ROYALTIES),
      )
        .to.be.revertedWithCustomError(this.fund, "FundZeroRecipient")
        .withArgs(1n);
      expect(await this.bpc.balanceOf(this.alice.address)).to.equal(0n);
    });

    it("reverts with the token's ERC20InsufficientBalance beyond the fund's holdings", async function () {
      await expect(this.asTreasurer.payout(this.bpcAddress, [this.alice.address], [toBpc(101)], ROYALTIES))
        .to.be.revertedWithCustomError(this.bpc, "ERC20InsufficientBalance")
        .withArgs(this.fundAddress, toBpc(100), toBpc(101));
    });

    it("requires TREASURER_ROLE, which the registrar, minter and depositors lack", async function () {
      const role = await this.fund.TREASURER_ROLE();
      for (const caller of [this.registrar, this.minter, this.depositor]) {
        await expect(this.fund.connect(caller).payout(this.bpcAddress, [caller.address], [1n], ROYALTIES))
          .to.be.revertedWithCustomError(this.fund, "AccessControlUnauthorizedAccount")
          .withArgs(caller.address, role);
      }
      expect(await this.fund.paidTags(ROYALTIES)).to.equal(false);
    });

    it("checks the role before the tag: an outsider learns nothing and spends no tag", async function () {
      const role = await this.fund.TREASURER_ROLE();
      await this.asTreasurer.payout(this.bpcAddress, [this.alice.address], [1n], ROYALTIES);
      await expect(this.fund.connect(this.depositor).payout(this.bpcAddress, [this.bob.address], [1n], ROYALTIES))
        .to.be.revertedWithCustomError(this.fund, "AccessControlUnauthorizedAccount")
        .withArgs(this.depositor.address, role);
      await expect(
        this.fund.connect(this.depositor).payout(this.bpcAddress, [this.bob.address], [1n], ROYALTIES_NEXT),
      ).to.be.revertedWithCustomError(this.fund, "AccessControlUnauthorizedAccount");
      expect(await this.fund.paidTags(ROYALTIES_NEXT)).to.equal(false);
    });
  });
});
