// Fund: tagged deposits from anyone, payouts only by the treasurer, each tag paid once.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { deployPool, toBpc } = require("./fixtures");

const ROYALTIES = ethers.id("royalties-2025-q1");
const ROYALTIES_NEXT = ethers.id("royalties-2025-q2");
const TRADING_FEE = ethers.id("trading-fee");

// A token holding 1,000 units in the fund whose every transfer, once armed, calls a contract
// that spins until it runs out of gas (bubbling the failure): a recipient that burns its gas.
async function gasBurningToken(fundAddress, owner) {
  const hostile = await (await ethers.getContractFactory("ReentrantToken")).deploy("Hostile", "HOST");
  await hostile.mint(fundAddress, 1_000n);
  const burner = await (await ethers.getContractFactory("ERC1271GasBurningWallet")).deploy(owner);
  const spin = burner.interface.encodeFunctionData("isValidSignature", [ethers.ZeroHash, "0x"]);
  await hostile.arm(await burner.getAddress(), spin, true);
  return { hostile, token: await hostile.getAddress() };
}

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
      ).to.be.revertedWithCustomError(this.fund, "FundInsufficientFree");
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

    it("reverts FundInsufficientFree beyond the fund's holdings, naming what is left for the line", async function () {
      await expect(this.asTreasurer.payout(this.bpcAddress, [this.alice.address], [toBpc(101)], ROYALTIES))
        .to.be.revertedWithCustomError(this.fund, "FundInsufficientFree")
        .withArgs(this.bpcAddress, toBpc(100), toBpc(101));
      await expect(
        this.asTreasurer.payout(this.bpcAddress, [this.alice.address, this.bob.address], [toBpc(60), toBpc(41)], ROYALTIES),
      )
        .to.be.revertedWithCustomError(this.fund, "FundInsufficientFree")
        .withArgs(this.bpcAddress, toBpc(40), toBpc(41));
      expect(await this.bpc.balanceOf(this.alice.address)).to.equal(0n);
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
  describe("held payouts and claims", function () {
    beforeEach(async function () {
      const factory = await ethers.getContractFactory("BlockingToken");
      this.blocking = await factory.deploy("Blocking USD", "BUSD");
      this.token = await this.blocking.getAddress();
      await this.blocking.mint(this.depositor.address, 1_000n);
      await this.blocking.connect(this.depositor).approve(this.fundAddress, 1_000n);
      await this.fund.connect(this.depositor).deposit(this.token, 100n, TRADING_FEE);
      this.asTreasurer = this.fund.connect(this.council);
      this.dave = this.users[0];
    });

    // The fund's balance is what it holds for recipients plus what it may still pay out.
    async function expectConserved(test, free) {
      expect(await test.blocking.balanceOf(test.fundAddress)).to.equal((await test.fund.totalOwed(test.token)) + free);
    }

    it("holds what the token refuses to deliver, pays the others, and spends the tag", async function () {
      await this.blocking.setBlocked(this.bob.address, true);
      const recipients = [this.alice.address, this.bob.address, this.carol.address];
      const tx = this.asTreasurer.payout(this.token, recipients, [10n, 20n, 30n], ROYALTIES);
      await expect(tx).to.changeTokenBalances(
        this.blocking,
        [this.fund, this.alice, this.bob, this.carol],
        [-40n, 10n, 0n, 30n],
      );
      await expect(tx).to.emit(this.fund, "FundPayoutHeld").withArgs(this.token, this.bob.address, 20n, ROYALTIES);
      const logs = (await (await tx).wait()).logs
        .filter((log) => log.address === this.fundAddress)
        .map((log) => this.fund.interface.parseLog(log));
      expect(logs.map((log) => [log.name, log.args.to, log.args.amount])).to.deep.equal([
        ["FundPayout", this.alice.address, 10n],
        ["FundPayoutHeld", this.bob.address, 20n],
        ["FundPayout", this.carol.address, 30n],
      ]);
      expect(await this.fund.owed(this.token, this.bob.address)).to.equal(20n);
      expect(await this.fund.owed(this.token, this.alice.address)).to.equal(0n);
      expect(await this.fund.totalOwed(this.token)).to.equal(20n);
      expect(await this.fund.paidTags(ROYALTIES)).to.equal(true);
      await expectConserved(this, 40n);
      await expect(this.asTreasurer.payout(this.token, recipients, [10n, 20n, 30n], ROYALTIES))
        .to.be.revertedWithCustomError(this.fund, "FundTagAlreadyPaid")
        .withArgs(ROYALTIES);
    });

    it("never pays what it holds to anyone else", async function () {
      await this.blocking.setBlocked(this.bob.address, true);
      await this.asTreasurer.payout(this.token, [this.bob.address], [70n], ROYALTIES);
      await expectConserved(this, 30n);
      await expect(this.asTreasurer.payout(this.token, [this.alice.address], [31n], ROYALTIES_NEXT))
        .to.be.revertedWithCustomError(this.fund, "FundInsufficientFree")
        .withArgs(this.token, 30n, 31n);
      await this.asTreasurer.payout(this.token, [this.alice.address], [30n], ROYALTIES_NEXT);
      await expectConserved(this, 0n);
      await expect(this.asTreasurer.payout(this.token, [this.carol.address], [1n], TRADING_FEE))
        .to.be.revertedWithCustomError(this.fund, "FundInsufficientFree")
        .withArgs(this.token, 0n, 1n);
      expect(await this.blocking.balanceOf(this.fundAddress)).to.equal(70n);
    });

    it("adds up what it holds for one recipient over payouts, and the recipient claims it to another address once", async function () {
      await this.blocking.setBlocked(this.bob.address, true);
      await this.asTreasurer.payout(this.token, [this.bob.address, this.alice.address], [20n, 5n], ROYALTIES);
      await this.asTreasurer.payout(this.token, [this.bob.address], [7n], ROYALTIES_NEXT);
      expect(await this.fund.owed(this.token, this.bob.address)).to.equal(27n);
      await expectConserved(this, 68n);

      const tx = this.fund.connect(this.bob).claim(this.token, this.dave.address);
      await expect(tx)
        .to.emit(this.fund, "FundClaimed")
        .withArgs(this.token, this.bob.address, this.dave.address, 27n);
      await expect(tx).to.changeTokenBalances(this.blocking, [this.fund, this.dave, this.bob], [-27n, 27n, 0n]);
      expect(await this.fund.owed(this.token, this.bob.address)).to.equal(0n);
      expect(await this.fund.totalOwed(this.token)).to.equal(0n);
      await expectConserved(this, 68n);

      await expect(this.fund.connect(this.bob).claim(this.token, this.dave.address))
        .to.be.revertedWithCustomError(this.fund, "FundNothingOwed")
        .withArgs(this.token, this.bob.address);
    });

    it("keeps the debt when the token refuses the claim, until it can be paid", async function () {
      await this.blocking.setBlocked(this.bob.address, true);
      await this.asTreasurer.payout(this.token, [this.bob.address], [20n], ROYALTIES);
      await expect(this.fund.connect(this.bob).claim(this.token, this.bob.address))
        .to.be.revertedWithCustomError(this.fund, "FundClaimRefused")
        .withArgs(this.token, this.bob.address, 20n);
      expect(await this.fund.owed(this.token, this.bob.address)).to.equal(20n);
      await expectConserved(this, 80n);

      await this.blocking.setBlocked(this.bob.address, false);
      await expect(this.fund.connect(this.bob).claim(this.token, this.bob.address))
        .to.emit(this.fund, "FundClaimed")
        .withArgs(this.token, this.bob.address, this.bob.address, 20n);
      expect(await this.blocking.balanceOf(this.bob.address)).to.equal(20n);
      await expectConserved(this, 80n);
    });

    it("gives a claimant nothing that is held for another, and refuses the zero address", async function () {
      await this.blocking.setBlocked(this.bob.address, true);
      await this.asTreasurer.payout(this.token, [this.bob.address, this.carol.address], [20n, 5n], ROYALTIES);
      for (const claimant of [this.carol, this.dave, this.council]) {
        await expect(this.fund.connect(claimant).claim(this.token, claimant.address))
          .to.be.revertedWithCustomError(this.fund, "FundNothingOwed")
          .withArgs(this.token, claimant.address);
      }
      await expect(this.fund.connect(this.bob).claim(this.token, ethers.ZeroAddress)).to.be.revertedWithCustomError(
        this.fund,
        "FundClaimToZeroAddress",
      );
      await expect(
        this.fund.connect(this.bob).claim(this.bpcAddress, this.bob.address),
      ).to.be.revertedWithCustomError(this.fund, "FundNothingOwed");
      expect(await this.fund.owed(this.token, this.bob.address)).to.equal(20n);
      await expectConserved(this, 75n);
    });

    it("refuses a token's call back into claim during a payout and during a claim", async function () {
      const hostile = await (await ethers.getContractFactory("ReentrantToken")).deploy("Hostile", "HOST");
      const token = await hostile.getAddress();
      await hostile.mint(this.fundAddress, 1_000n);
      const reenter = this.fund.interface.encodeFunctionData("claim", [token, this.carol.address]);

      // Inside the payout's transfer to alice the token calls claim: refused, so the transfer
      // fails (bubbling mode, which reverts the token's own records of the attempt too) and
      // alice's line is held.
      await hostile.arm(this.fundAddress, reenter, true);
      const payout = this.asTreasurer.payout(token, [this.alice.address], [100n], ROYALTIES);
      await expect(payout).to.emit(this.fund, "FundPayoutHeld").withArgs(token, this.alice.address, 100n, ROYALTIES);
      expect(await this.fund.owed(token, this.alice.address)).to.equal(100n);
      expect(await hostile.balanceOf(this.carol.address)).to.equal(0n);

      // Inside alice's claim the token calls claim again (recording mode): refused, the claim goes on.
      await hostile.arm(this.fundAddress, reenter, false);
      await expect(this.fund.connect(this.alice).claim(token, this.alice.address))
        .to.emit(this.fund, "FundClaimed")
        .withArgs(token, this.alice.address, this.alice.address, 100n);
      expect(await hostile.reentryAttempts()).to.equal(1n);
      expect(await hostile.reentrySuccesses()).to.equal(0n);
      const refusal = this.fund.interface.parseError(await hostile.lastReentryError());
      expect(refusal.name).to.equal("ReentrancyGuardReentrantCall");
      expect(await hostile.balanceOf(this.alice.address)).to.equal(100n);
      expect(await hostile.balanceOf(this.carol.address)).to.equal(0n);
      expect(await this.fund.totalOwed(token)).to.equal(0n);
      expect(await hostile.balanceOf(this.fundAddress)).to.equal(900n);
    });

    it("holds the line of a recipient that burns every unit of gas in the token's callback, at a bounded cost", async function () {
      const { hostile, token } = await gasBurningToken(this.fundAddress, this.alice.address);

      const tx = await this.asTreasurer.payout(token, [this.alice.address], [100n], ROYALTIES, {
        gasLimit: 10_000_000,
      });
      const receipt = await tx.wait();
      await expect(tx).to.emit(this.fund, "FundPayoutHeld").withArgs(token, this.alice.address, 100n, ROYALTIES);
      // The line burnt at most the cap, not 63/64 of the ten million the transaction had.
      const cap = await this.fund.PAYOUT_TRANSFER_GAS();
      expect(receipt.gasUsed).to.be.lessThan(cap + 150_000n);
      expect(await this.fund.totalOwed(token)).to.equal(100n);

      // Two such lines deliver nothing: the payout reverts rather than hold both.
      await expect(
        this.asTreasurer.payout(token, [this.bob.address, this.carol.address], [50n, 50n], ROYALTIES_NEXT, {
          gasLimit: 10_000_000,
        }),
      )
        .to.be.revertedWithCustomError(this.fund, "FundNothingDelivered")
        .withArgs(token);

      await hostile.arm(ethers.ZeroAddress, "0x", false);
      await this.fund.connect(this.alice).claim(token, this.alice.address);
      expect(await hostile.balanceOf(this.alice.address)).to.equal(100n);
      expect(await this.fund.totalOwed(token)).to.equal(0n);
    });

    it("reverts FundTransferOutOfGas, holding nothing, when the gas limit starved a line's transfer of its cap", async function () {
      const { token } = await gasBurningToken(this.fundAddress, this.alice.address);
      const args = [token, [this.alice.address], [100n], ROYALTIES];

      // Search the gas limits at which the transfer gets less than its cap yet the payout does
      // not run out of gas before it: there the payout must name the starved line, not hold it.
      let starvedAt = null;
      for (let gasLimit = 50_000; gasLimit <= 400_000 && starvedAt === null; gasLimit += 5_000) {
        try {
          await this.asTreasurer.payout.staticCall(...args, { gasLimit });
        } catch (error) {
          const data = typeof error.data === "string" ? error.data : error.data?.data;
          const parsed = data && data !== "0x" ? this.fund.interface.parseError(data) : null;
          if (parsed?.name === "FundTransferOutOfGas") starvedAt = gasLimit;
        }
      }
      expect(starvedAt, "no gas limit starved the transfer").to.not.equal(null);
      await expect(this.asTreasurer.payout(...args, { gasLimit: starvedAt }))
        .to.be.revertedWithCustomError(this.fund, "FundTransferOutOfGas")
        .withArgs(this.alice.address);
      expect(await this.fund.paidTags(ROYALTIES)).to.be.false;
      expect(await this.fund.totalOwed(token)).to.equal(0n);
    });

    it("reverts FundNothingDelivered when the token refuses the fund itself, holding nothing and leaving the tag unused", async function () {
      await this.blocking.setBlocked(this.fundAddress, true);
      const recipients = [this.alice.address, this.bob.address, this.carol.address];
      await expect(this.asTreasurer.payout(this.token, recipients, [10n, 20n, 30n], ROYALTIES))
        .to.be.revertedWithCustomError(this.fund, "FundNothingDelivered")
        .withArgs(this.token);
      expect(await this.fund.paidTags(ROYALTIES)).to.be.false;
      expect(await this.fund.totalOwed(this.token)).to.equal(0n);

      // Once the token delivers again, the same payout is sent again and pays everyone.
      await this.blocking.setBlocked(this.fundAddress, false);
      const tx = this.asTreasurer.payout(this.token, recipients, [10n, 20n, 30n], ROYALTIES);
      await expect(tx).to.changeTokenBalances(this.blocking, [this.alice, this.bob, this.carol], [10n, 20n, 30n]);
      await expect(tx).to.not.emit(this.fund, "FundPayoutHeld");
    });

    it("holds the line of a one-line payout the token refuses: it cannot tell its recipient from the fund", async function () {
      await this.blocking.setBlocked(this.fundAddress, true);
      await expect(this.asTreasurer.payout(this.token, [this.alice.address], [10n], ROYALTIES))
        .to.emit(this.fund, "FundPayoutHeld")
        .withArgs(this.token, this.alice.address, 10n, ROYALTIES);
      expect(await this.fund.owed(this.token, this.alice.address)).to.equal(10n);
    });

    describe("reading the token's answer to a transfer", function () {
      const Mode = { ReturnTrue: 0, ReturnNothing: 1, ReturnFalse: 2, ReturnTrueAndMore: 3, RevertWithLargeData: 4 };
      const cases = [
        ["returns true", Mode.ReturnTrue, true],
        ["returns nothing, as USDT does", Mode.ReturnNothing, true],
        ["returns false without moving anything", Mode.ReturnFalse, false],
        ["returns 64 bytes that start with true", Mode.ReturnTrueAndMore, true],
        ["reverts with 4 KiB of data", Mode.RevertWithLargeData, false],
      ];
      for (const [name, mode, paid] of cases) {
        it(`${paid ? "pays" : "holds"} the line when the token ${name}`, async function () {
          const answering = await (await ethers.getContractFactory("ReturnDataToken")).deploy("Answer", "ANS");
          const token = await answering.getAddress();
          await answering.mint(this.fundAddress, 100n);
          await answering.setMode(mode);
          const tx = this.asTreasurer.payout(token, [this.alice.address], [40n], ROYALTIES);
          await expect(tx)
            .to.emit(this.fund, paid ? "FundPayout" : "FundPayoutHeld")
            .withArgs(token, this.alice.address, 40n, ROYALTIES);
          expect(await answering.balanceOf(this.alice.address)).to.equal(paid ? 40n : 0n);
          expect(await this.fund.owed(token, this.alice.address)).to.equal(paid ? 0n : 40n);
          expect(await this.fund.totalOwed(token)).to.equal(paid ? 0n : 40n);
        });
      }
    });

    it("conserves the fund's balance as owed plus free through payouts, holds and claims", async function () {
      const people = [this.alice, this.bob, this.carol, this.dave];
      let free = 100n;
      let delivered = 0n;
      const steps = [
        { blocked: [this.bob], lines: [[this.alice, 10n], [this.bob, 15n], [this.carol, 5n]] },
        { blocked: [this.bob, this.carol], lines: [[this.bob, 3n], [this.carol, 4n], [this.dave, 6n]] },
        { claims: [[this.carol, this.alice]] },
        { blocked: [], lines: [[this.bob, 2n]], claims: [[this.bob, this.bob]] },
      ];
      for (const [index, step] of steps.entries()) {
        for (const person of people) {
          await this.blocking.setBlocked(person.address, (step.blocked ?? []).includes(person));
        }
        if (step.lines) {
          const tag = ethers.id(`conservation-${index}`);
          await this.asTreasurer.payout(
            this.token,
            step.lines.map(([person]) => person.address),
            step.lines.map(([, amount]) => amount),
            tag,
          );
          free -= step.lines.reduce((sum, [, amount]) => sum + amount, 0n);
        }
        for (const [claimant, to] of step.claims ?? []) {
          await this.fund.connect(claimant).claim(this.token, to.address);
        }
        let owedToPeople = 0n;
        for (const person of people) owedToPeople += await this.fund.owed(this.token, person.address);
        expect(owedToPeople).to.equal(await this.fund.totalOwed(this.token));
        await expectConserved(this, free);
        delivered = 0n;
        for (const person of people) delivered += await this.blocking.balanceOf(person.address);
        expect(delivered + owedToPeople + free).to.equal(100n);
      }
      expect(await this.fund.totalOwed(this.token)).to.equal(0n);
      expect(delivered).to.equal(45n);
    });
  });
});
