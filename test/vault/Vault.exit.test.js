// Vault escape hatch: an account requests an exit, stops trading at once, and
// after the exit delay withdraws everything without the operator.
const { expect } = require("chai");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { ethers } = require("hardhat");
const {
  deployVaultWithTraders,
  deployVaultContract,
  bpc,
  EXIT_DELAY,
  DEPOSIT_BPC,
  DEPOSIT_QUOTE,
} = require("./fixtures");
const { Side, SkipReason, newOrder, signAll, newFill } = require("./orders");

describe("Vault: escape hatch", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployVaultWithTraders));
    this.bpcAddress = await this.bpc.getAddress();
    this.quoteAddress = await this.quote.getAddress();
    this.requestExit = async (account) => {
      const tx = await this.vault.connect(account).requestExit();
      const block = await tx.getBlock();
      return { tx, availableAt: BigInt(block.timestamp) + BigInt(EXIT_DELAY) };
    };
  });

  it("records the request with its availability time", async function () {
    const { tx, availableAt } = await this.requestExit(this.alice);
    await expect(tx).to.emit(this.vault, "ExitRequested").withArgs(this.alice.address, availableAt);
    expect((await this.vault.accountOf(this.alice.address)).exitAvailableAt).to.equal(availableAt);
  });

  it("reverts VaultExitAlreadyRequested for a second request", async function () {
    const { availableAt } = await this.requestExit(this.alice);
    await expect(this.vault.connect(this.alice).requestExit())
      .to.be.revertedWithCustomError(this.vault, "VaultExitAlreadyRequested")
      .withArgs(this.alice.address, availableAt);
  });

  it("reverts VaultExitNotReady before the delay has passed", async function () {
    const { availableAt } = await this.requestExit(this.alice);
    await time.setNextBlockTimestamp(availableAt - 1n);
    await expect(this.vault.connect(this.alice).exit())
      .to.be.revertedWithCustomError(this.vault, "VaultExitNotReady")
      .withArgs(this.alice.address, availableAt, availableAt - 1n);
  });

  it("reverts VaultExitNotRequested without a request", async function () {
    await expect(this.vault.connect(this.alice).exit())
      .to.be.revertedWithCustomError(this.vault, "VaultExitNotRequested")
      .withArgs(this.alice.address);
  });

  it("pays out both balances after the delay, with no operator left at all", async function () {
    const { availableAt } = await this.requestExit(this.alice);
    await this.vault.connect(this.council).revokeRole(await this.vault.OPERATOR_ROLE(), this.operator.address);
    await time.setNextBlockTimestamp(availableAt);
    const tx = this.vault.connect(this.alice).exit();
    await expect(tx).to.emit(this.vault, "Exited").withArgs(this.alice.address, DEPOSIT_BPC, DEPOSIT_QUOTE);
    await expect(tx).to.changeTokenBalances(this.bpc, [this.vault, this.alice], [-DEPOSIT_BPC, DEPOSIT_BPC]);
    await expect(tx).to.changeTokenBalances(this.quote, [this.vault, this.alice], [-DEPOSIT_QUOTE, DEPOSIT_QUOTE]);
    const account = await this.vault.accountOf(this.alice.address);
    expect([account.baseBalance, account.quoteBalance, account.exitAvailableAt]).to.deep.equal([0n, 0n, availableAt]);
  });

  it("pays the token that transfers when the other refuses, and that one at a later exit", async function () {
    const blocking = await (await ethers.getContractFactory("BlockingToken")).deploy("Blocking USD", "BUSD");
    const vault = await deployVaultContract(this, blocking, this.council);
    const vaultAddress = await vault.getAddress();
    await blocking.mint(this.alice.address, 500n);
    await blocking.connect(this.alice).approve(vaultAddress, 500n);
    await vault.connect(this.alice).deposit(await blocking.getAddress(), 500n);
    await this.bpc.connect(this.alice).approve(vaultAddress, bpc(3));
    await vault.connect(this.alice).deposit(this.bpcAddress, bpc(3));
    await vault.connect(this.alice).requestExit();
    await time.increase(EXIT_DELAY);
    await vault.connect(this.council).revokeRole(await vault.OPERATOR_ROLE(), this.operator.address);

    await blocking.setBlocked(this.alice.address, true); // the quote token blocks alice
    const first = vault.connect(this.alice).exit();
    await expect(first).to.emit(vault, "Exited").withArgs(this.alice.address, bpc(3), 0n);
    await expect(first).to.changeTokenBalances(this.bpc, [vault, this.alice], [-bpc(3), bpc(3)]);
    let account = await vault.accountOf(this.alice.address);
    expect([account.baseBalance, account.quoteBalance]).to.deep.equal([0n, 500n]);

    await expect(vault.connect(this.alice).exit()) // nothing can leave: nothing changes
      .to.be.revertedWithCustomError(vault, "VaultExitTransferFailed")
      .withArgs(this.alice.address);

    await blocking.setBlocked(this.alice.address, false);
    const second = vault.connect(this.alice).exit();
    await expect(second).to.emit(vault, "Exited").withArgs(this.alice.address, 0n, 500n);
    await expect(second).to.changeTokenBalances(blocking, [vault, this.alice], [-500n, 500n]);
    account = await vault.accountOf(this.alice.address);
    expect([account.baseBalance, account.quoteBalance]).to.deep.equal([0n, 0n]);
  });

  it("includes deposits made after the request, and a second exit pays what came in since", async function () {
    const { availableAt } = await this.requestExit(this.alice);
    await this.vault.connect(this.alice).deposit(this.bpcAddress, bpc(5));
    await time.setNextBlockTimestamp(availableAt);
    await expect(this.vault.connect(this.alice).exit())
      .to.emit(this.vault, "Exited")
      .withArgs(this.alice.address, DEPOSIT_BPC + bpc(5), DEPOSIT_QUOTE);
    await this.vault.connect(this.alice).deposit(this.quoteAddress, 7n);
    await expect(this.vault.connect(this.alice).exit()).to.emit(this.vault, "Exited").withArgs(this.alice.address, 0n, 7n);
  });

  it("stops settlement for the account at once, as maker and as taker: its fills are skipped", async function () {
    await this.requestExit(this.alice);
    const sell = await newOrder(this, this.alice, { side: Side.Sell });
    const buy = await newOrder(this, this.bob, { side: Side.Buy });
    for (const entries of [
      [
        { order: sell, signer: this.alice },
        { order: buy, signer: this.bob },
      ],
      [
        { order: buy, signer: this.bob },
        { order: sell, signer: this.alice },
      ],
    ]) {
      const { orders, signatures, hashes } = await signAll(this.vault, entries);
      const tx = this.vault.connect(this.operator).settle(orders, signatures, [newFill(0, 1, bpc(1), sell.price)]);
      const aliceOrder = entries[0].order === sell ? hashes[0] : hashes[1];
      await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, aliceOrder, SkipReason.AccountExiting);
      await expect(tx).not.to.emit(this.vault, "Trade");
    }
    expect(await this.vault.balanceOf(this.alice.address, this.bpcAddress)).to.equal(DEPOSIT_BPC);
    expect(await this.vault.balanceOf(this.alice.address, this.quoteAddress)).to.equal(DEPOSIT_QUOTE);
  });

  it("trades again after cancelExit", async function () {
    await this.requestExit(this.alice);
    await expect(this.vault.connect(this.alice).cancelExit()).to.emit(this.vault, "ExitCancelled").withArgs(this.alice.address);
    expect((await this.vault.accountOf(this.alice.address)).exitAvailableAt).to.equal(0n);
    const sell = await newOrder(this, this.alice, { side: Side.Sell });
    const { orders, signatures } = await signAll(this.vault, [
      { order: sell, signer: this.alice },
      { order: await newOrder(this, this.bob, { side: Side.Buy }), signer: this.bob },
    ]);
    await expect(this.vault.connect(this.operator).settle(orders, signatures, [newFill(0, 1, bpc(1), sell.price)])).to.emit(
      this.vault,
      "Trade",
    );
  });

  it("reverts VaultExitNotRequested for cancelExit without a request", async function () {
    await expect(this.vault.connect(this.alice).cancelExit())
      .to.be.revertedWithCustomError(this.vault, "VaultExitNotRequested")
      .withArgs(this.alice.address);
  });

  describe("exit delay", function () {
    it("is set by the council, applies to later requests only", async function () {
      const { availableAt } = await this.requestExit(this.alice);
      await expect(this.vault.connect(this.council).setExitDelay(60n))
        .to.emit(this.vault, "ExitDelayChanged")
        .withArgs(BigInt(EXIT_DELAY), 60n);
      expect((await this.vault.accountOf(this.alice.address)).exitAvailableAt).to.equal(availableAt);
      const later = await this.requestExit(this.bob);
      const block = await later.tx.getBlock();
      expect((await this.vault.accountOf(this.bob.address)).exitAvailableAt).to.equal(BigInt(block.timestamp) + 60n);
    });

    it("reverts VaultExitDelayTooLong above MAX_EXIT_DELAY", async function () {
      const max = await this.vault.MAX_EXIT_DELAY();
      await this.vault.connect(this.council).setExitDelay(max);
      await expect(this.vault.connect(this.council).setExitDelay(max + 1n))
        .to.be.revertedWithCustomError(this.vault, "VaultExitDelayTooLong")
        .withArgs(max + 1n, max);
    });

    it("reverts AccessControlUnauthorizedAccount for anyone but the council", async function () {
      await expect(this.vault.connect(this.operator).setExitDelay(0n))
        .to.be.revertedWithCustomError(this.vault, "AccessControlUnauthorizedAccount")
        .withArgs(this.operator.address, await this.vault.DEFAULT_ADMIN_ROLE());
    });

    it("can be zero: the exit is available at once", async function () {
      await this.vault.connect(this.council).setExitDelay(0n);
      await this.vault.connect(this.alice).requestExit();
      await expect(this.vault.connect(this.alice).exit()).to.emit(this.vault, "Exited");
    });
  });
});
