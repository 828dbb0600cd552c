// Vault.settle skips the fills of an order whose maker, a contract wallet, no longer accepts its
// signature (ERC-1271) as it skips those of an order withdrawn on chain: the wallet's owner can
// withdraw an approval between the match and the batch, and that must not revert every other
// member's fills. So is an account without code whose signature does not recover to it: with
// EIP-7702 it may have had wallet code when it signed and cleared it since. A wallet that refused
// with less gas than its cap reverts the batch: only a refusal given the whole WALLET_CHECK_GAS
// is the wallet's own, never the gas limit the operator chose.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture, setCode, takeSnapshot } = require("@nomicfoundation/hardhat-network-helpers");
const { addWalletMember, deployVaultWithTraders, bpc, usd } = require("./fixtures");
const {
  Side,
  SkipReason,
  newOrder,
  signAll,
  signOrder,
  newFill,
  settlementAmounts,
  domainOf,
  settleSigned,
  vaultEvents,
} = require("./orders");

const PRICE = usd(2);
const MAKER_FEE_BPS = 10n;
const TAKER_FEE_BPS = 20n;

/** deployVaultWithTraders plus an ERC1271ApprovingWallet member owned by `walletOwner`. */
async function deployWithApprovingWallet() {
  const ctx = await deployVaultWithTraders();
  const [walletOwner] = ctx.users;
  const { wallet, walletAddress } = await addWalletMember(ctx, "ERC1271ApprovingWallet", walletOwner);
  return { ...ctx, wallet, walletAddress, walletOwner };
}

describe("Vault: fills of orders a contract wallet no longer accepts are skipped", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployWithApprovingWallet));
    this.domain = await domainOf(this.vault);
    this.bpcAddress = await this.bpc.getAddress();
    this.quoteAddress = await this.quote.getAddress();
    this.sell = (maker, fields) => newOrder(this, maker, { side: Side.Sell, price: PRICE, ...fields });
    this.buy = (maker, fields) => newOrder(this, maker, { side: Side.Buy, price: PRICE, ...fields });
    this.fill = (makerIndex, takerIndex, amount = bpc(1), price = PRICE) =>
      newFill(makerIndex, takerIndex, amount, price, MAKER_FEE_BPS, TAKER_FEE_BPS);
    // The wallet's owner approves the order's digest on chain (or withdraws the approval).
    this.approve = async (order, approval) => {
      const digest = await this.vault.hashOrder(order);
      await (await this.wallet.connect(this.walletOwner).setApproval(digest, approval)).wait();
    };
    this.walletEntry = async (order) => {
      await this.approve(order, true);
      return { order, signer: this.walletOwner };
    };
    this.balances = async (account) => [
      await this.vault.balanceOf(account, this.bpcAddress),
      await this.vault.balanceOf(account, this.quoteAddress),
    ];
    this.settle = (entries, fills) => settleSigned(this.vault, this.operator, entries, fills);
    this.events = (receipt, name) => vaultEvents(this.vault, receipt, name);
  });

  it("settles the wallet's fill while the wallet approves its order", async function () {
    const entries = [
      await this.walletEntry(await this.sell(this.walletAddress)),
      { order: await this.buy(this.bob), signer: this.bob },
    ];
    const { tx, receipt } = await this.settle(entries, [this.fill(0, 1)]);
    await expect(tx).not.to.emit(this.vault, "FillSkipped");
    expect(this.events(receipt, "Trade")).to.have.length(1);
    expect((await this.balances(this.walletAddress))[0]).to.equal(bpc(99));
  });

  it("skips the fill of a maker order whose approval the wallet withdrew, and settles the others", async function () {
    // bob buys 2 BPC from the wallet and from alice; the wallet withdraws its approval before the batch.
    const entries = [
      await this.walletEntry(await this.sell(this.walletAddress)),
      { order: await this.sell(this.alice), signer: this.alice },
      { order: await this.buy(this.bob, { amount: bpc(2) }), signer: this.bob },
    ];
    await this.approve(entries[0].order, false);
    const walletBefore = await this.balances(this.walletAddress);
    const aliceBefore = await this.balances(this.alice.address);
    const bobBefore = await this.balances(this.bob.address);

    const { tx, receipt, hashes } = await this.settle(entries, [this.fill(0, 2), this.fill(1, 2)]);

    expect(receipt.status).to.equal(1);
    await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hashes[0], SkipReason.WalletRefused);
    expect(this.events(receipt, "FillSkipped")).to.have.length(1);
    const trades = this.events(receipt, "Trade");
    expect(trades.map((trade) => trade.args.makerOrderHash)).to.deep.equal([hashes[1]]);
    const { quote, buyerFee, sellerFee } = settlementAmounts(bpc(1), PRICE, TAKER_FEE_BPS, 30n, MAKER_FEE_BPS, 30n);
    await expect(tx)
      .to.emit(this.vault, "FeesCollected")
      .withArgs(this.quoteAddress, buyerFee + sellerFee, buyerFee + sellerFee);
    expect(await this.balances(this.walletAddress)).to.deep.equal(walletBefore);
    expect(await this.balances(this.alice.address)).to.deep.equal([
      aliceBefore[0] - bpc(1),
      aliceBefore[1] + quote - sellerFee,
    ]);
    expect(await this.balances(this.bob.address)).to.deep.equal([
      bobBefore[0] + bpc(1),
      bobBefore[1] - quote - buyerFee,
    ]);
    expect(await this.vault.orderState(hashes[0])).to.deep.equal([0n, false]);
    expect(await this.vault.orderState(hashes[2])).to.deep.equal([bpc(1), false]);
  });

  it("skips a fill whose taker order the wallet no longer approves, leaving its maker untouched", async function () {
    // The wallet's buy takes alice's sell, bob's buy takes dave's; the wallet withdraws its approval.
    const entries = [
      { order: await this.sell(this.alice), signer: this.alice },
      await this.walletEntry(await this.buy(this.walletAddress)),
      { order: await this.sell(this.dave), signer: this.dave },
      { order: await this.buy(this.bob), signer: this.bob },
    ];
    await this.approve(entries[1].order, false);
    const aliceBefore = await this.balances(this.alice.address);
    const walletBefore = await this.balances(this.walletAddress);

    const { tx, receipt, hashes } = await this.settle(entries, [this.fill(0, 1), this.fill(2, 3)]);

    await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hashes[1], SkipReason.WalletRefused);
    expect(this.events(receipt, "FillSkipped")).to.have.length(1);
    expect(this.events(receipt, "Trade").map((trade) => trade.args.takerOrderHash)).to.deep.equal([hashes[3]]);
    expect(await this.balances(this.alice.address)).to.deep.equal(aliceBefore);
    expect(await this.balances(this.walletAddress)).to.deep.equal(walletBefore);
    expect(await this.vault.orderState(hashes[0])).to.deep.equal([0n, false]);
  });

  it("skips every fill of the refused order, each with its own event, and keeps a partial fill", async function () {
    const sell = await this.sell(this.walletAddress, { amount: bpc(3) });
    await this.settle([await this.walletEntry(sell), { order: await this.buy(this.bob), signer: this.bob }], [
      this.fill(0, 1),
    ]);
    await this.approve(sell, false);

    const { receipt, hashes } = await this.settle(
      [
        { order: sell, signer: this.walletOwner },
        { order: await this.buy(this.bob), signer: this.bob },
        { order: await this.buy(this.dave), signer: this.dave },
      ],
      [this.fill(0, 1), this.fill(0, 2)],
    );

    const skipped = this.events(receipt, "FillSkipped").map((event) => [
      event.args.fillIndex,
      event.args.orderHash,
      event.args.reason,
    ]);
    expect(skipped).to.deep.equal([
      [0n, hashes[0], BigInt(SkipReason.WalletRefused)],
      [1n, hashes[0], BigInt(SkipReason.WalletRefused)],
    ]);
    expect(this.events(receipt, "Trade")).to.have.length(0);
    expect(await this.vault.orderState(hashes[0])).to.deep.equal([bpc(1), false]);
  });

  it("names the wallet's exit, its own act on chain, when the wallet also refuses the order", async function () {
    const entries = [
      await this.walletEntry(await this.sell(this.walletAddress)),
      { order: await this.buy(this.bob), signer: this.bob },
    ];
    await this.approve(entries[0].order, false);
    const requestExit = this.vault.interface.encodeFunctionData("requestExit");
    await this.wallet.connect(this.walletOwner).execute(await this.vault.getAddress(), requestExit);

    const { tx, hashes } = await this.settle(entries, [this.fill(0, 1)]);

    await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hashes[0], SkipReason.AccountExiting);
  });

  it("skips the order of a maker without code whose signature does not recover to it, settling the rest", async function () {
    // A member's action (EIP-7702, below) or an operator's mistake: either way only its fills fail.
    const walletSell = await this.sell(this.walletAddress);
    const aliceSell = await this.sell(this.alice);
    const daveSell = await this.sell(this.dave);
    const { orders, signatures, hashes } = await signAll(this.vault, [
      await this.walletEntry(walletSell),
      { order: aliceSell, signer: this.alice },
      { order: daveSell, signer: this.dave },
      { order: await this.buy(this.bob, { amount: bpc(3) }), signer: this.bob },
    ]);
    await this.approve(walletSell, false);
    signatures[1] = await signOrder(this.carol, this.domain, aliceSell);
    const aliceBefore = await this.balances(this.alice.address);

    const tx = await this.vault
      .connect(this.operator)
      .settle(orders, signatures, [this.fill(0, 3), this.fill(1, 3), this.fill(2, 3)]);
    const receipt = await tx.wait();

    const skipped = this.events(receipt, "FillSkipped").map((event) => [event.args.fillIndex, event.args.orderHash]);
    expect(skipped).to.deep.equal([
      [0n, hashes[0]],
      [1n, hashes[1]],
    ]);
    await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(1n, hashes[1], SkipReason.WalletRefused);
    expect(this.events(receipt, "Trade").map((trade) => trade.args.makerOrderHash)).to.deep.equal([hashes[2]]);
    expect(await this.balances(this.alice.address)).to.deep.equal(aliceBefore);
  });

  it("skips the order of an account whose delegated wallet code accepted it and is gone by the batch", async function () {
    // EIP-7702 on a network before Prague: alice's account gets wallet code, as a delegation
    // would give it, the wallet's owner signs an order for alice that alice's key did not, and
    // the code is cleared again before the batch, as a delegation to address(0) would clear it.
    const delegate = await (await ethers.getContractFactory("ERC1271Wallet")).deploy(this.walletOwner.address);
    const walletCode = await ethers.provider.getCode(await delegate.getAddress());
    const bobBuy = await this.buy(this.bob, { amount: bpc(4) });
    // Alice's sell signed by the wallet's owner, dave's by dave, both taken by bob's buy.
    const entries = async () => [
      { order: await this.sell(this.alice), signer: this.walletOwner },
      { order: await this.sell(this.dave), signer: this.dave },
      { order: bobBuy, signer: this.bob },
    ];
    await setCode(this.alice.address, walletCode);
    try {
      // While alice's account has the code, the wallet's answer settles alice's order.
      const delegated = await this.settle(await entries(), [this.fill(0, 2), this.fill(1, 2)]);
      expect(this.events(delegated.receipt, "Trade")).to.have.length(2);
    } finally {
      await setCode(this.alice.address, "0x");
    }
    const aliceBefore = await this.balances(this.alice.address);

    const { tx, receipt, hashes } = await this.settle(await entries(), [this.fill(0, 2), this.fill(1, 2)]);

    expect(receipt.status).to.equal(1);
    await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hashes[0], SkipReason.WalletRefused);
    expect(this.events(receipt, "Trade").map((trade) => trade.args.makerOrderHash)).to.deep.equal([hashes[1]]);
    expect(await this.balances(this.alice.address)).to.deep.equal(aliceBefore);
  });

  // ERC1271MalformedWallet.Answer: answers ERC-1271 does not take for a yes.
  for (const [answer, label] of [
    [0, "reverts"],
    [1, "returns its selector in fewer than 32 bytes"],
    [2, "returns its selector followed by junk"],
  ]) {
    it(`skips the fill of a wallet that ${label}, and settles the others`, async function () {
      const malformed = await addWalletMember(this, "ERC1271MalformedWallet", this.walletOwner, answer);
      const entries = [
        { order: await this.sell(malformed.walletAddress), signer: this.walletOwner },
        { order: await this.sell(this.alice), signer: this.alice },
        { order: await this.buy(this.bob, { amount: bpc(2) }), signer: this.bob },
      ];
      const before = await this.balances(malformed.walletAddress);

      const { tx, receipt, hashes } = await this.settle(entries, [this.fill(0, 2), this.fill(1, 2)]);

      await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hashes[0], SkipReason.WalletRefused);
      expect(this.events(receipt, "FillSkipped")).to.have.length(1);
      expect(this.events(receipt, "Trade").map((trade) => trade.args.makerOrderHash)).to.deep.equal([hashes[1]]);
      expect(await this.balances(malformed.walletAddress)).to.deep.equal(before);
    });
  }

  it("still reverts for a fill of a refused order at a price beyond its limit", async function () {
    const entries = [
      await this.walletEntry(await this.sell(this.walletAddress)),
      { order: await this.buy(this.bob), signer: this.bob },
    ];
    await this.approve(entries[0].order, false);
    const { orders, signatures, hashes } = await signAll(this.vault, entries);
    await expect(this.vault.connect(this.operator).settle(orders, signatures, [this.fill(0, 1, bpc(1), PRICE - 1n)]))
      .to.be.revertedWithCustomError(this.vault, "VaultPriceOutsideLimit")
      .withArgs(hashes[0], PRICE - 1n, PRICE);
  });

  it("still reverts VaultNotActiveMember for a suspended wallet that also refuses its order", async function () {
    const entries = [
      await this.walletEntry(await this.sell(this.walletAddress)),
      { order: await this.buy(this.bob), signer: this.bob },
    ];
    await this.approve(entries[0].order, false);
    await this.registry.connect(this.registrar).suspend(this.walletAddress);
    const { orders, signatures } = await signAll(this.vault, entries);
    await expect(this.vault.connect(this.operator).settle(orders, signatures, [this.fill(0, 1)]))
      .to.be.revertedWithCustomError(this.vault, "VaultNotActiveMember")
      .withArgs(this.walletAddress);
  });

  describe("gas", function () {
    beforeEach(async function () {
      // A wallet that answers only with 400,000 gas or more and refuses at once with less,
      // leaving the batch the rest: the case where a wallet short of gas could pass for a refusal.
      this.guarded = await addWalletMember(this, "ERC1271GasGuardedWallet", this.walletOwner, 400_000n);
      this.guardedEntry = async (guarded = this.guarded) => ({
        order: await this.sell(guarded.walletAddress),
        signer: this.walletOwner,
      });
      // What `settle` does with `gasLimit`: the custom error it reverts with (null when the gas
      // ran out without one), or the fills it skipped and the trades it made. The chain is left as it was.
      this.outcome = async (orders, signatures, fills, gasLimit) => {
        const snapshot = await takeSnapshot();
        try {
          const tx = await this.vault.connect(this.operator).settle(orders, signatures, fills, { gasLimit });
          const receipt = await tx.wait();
          return {
            skipped: this.events(receipt, "FillSkipped").map((event) => event.args.orderHash),
            trades: this.events(receipt, "Trade").length,
          };
        } catch (error) {
          // Hardhat gives the revert data as a string, or within an object for a gas failure.
          const data = (typeof error.data === "string" ? error.data : error.data?.data) ?? "0x";
          return { reverted: data === "0x" ? null : this.vault.interface.parseError(data).name };
        } finally {
          await snapshot.restore();
        }
      };
      // `settle` at each gas limit from `from` to `to`: never a skip, only a revert short of gas or
      // every fill settled. Returns the outcomes seen ("VaultWalletCheckOutOfGas", "out of gas", "settled").
      this.scan = async (orders, signatures, fills, { from, to, step }) => {
        const seen = new Set();
        for (let gasLimit = from; gasLimit <= to; gasLimit += step) {
          const outcome = await this.outcome(orders, signatures, fills, gasLimit);
          if ("reverted" in outcome) {
            expect([null, "VaultWalletCheckOutOfGas"], `at ${gasLimit}`).to.include(outcome.reverted);
            seen.add(outcome.reverted ?? "out of gas");
          } else {
            expect(outcome, `at ${gasLimit}`).to.deep.equal({ skipped: [], trades: fills.length });
            seen.add("settled");
          }
        }
        return seen;
      };
    });

    it("reverts VaultWalletCheckOutOfGas, never skips, when the gas limit left a wallet less than its cap", async function () {
      const { orders, signatures } = await signAll(this.vault, [
        await this.guardedEntry(),
        { order: await this.buy(this.bob), signer: this.bob },
      ]);
      const fills = [this.fill(0, 1)];
      // 450,000 leaves the wallet less than 400,000 and the batch enough to finish without it.
      expect(await this.outcome(orders, signatures, fills, 450_000)).to.deep.equal({
        reverted: "VaultWalletCheckOutOfGas",
      });
      // The limit an operator takes from eth_estimateGas settles the fill.
      const estimate = await this.vault.connect(this.operator).settle.estimateGas(orders, signatures, fills);
      expect(await this.outcome(orders, signatures, fills, estimate)).to.deep.equal({ skipped: [], trades: 1 });
    });

    it("never skips a wallet that needs its whole cap, at any gas limit across the threshold", async function () {
      // The wallet refuses below 499,500 gas: it gets that only with (nearly) the whole cap, so a
      // threshold (Vault.WALLET_CALL_GAS) set too low shows as a skip just above it.
      const needy = await addWalletMember(this, "ERC1271GasGuardedWallet", this.walletOwner, 499_500n);
      const { orders, signatures } = await signAll(this.vault, [
        await this.guardedEntry(needy),
        { order: await this.buy(this.bob), signer: this.bob },
      ]);
      const fills = [this.fill(0, 1)];
      const outOfGas = async (gasLimit) =>
        (await this.outcome(orders, signatures, fills, gasLimit)).reverted === "VaultWalletCheckOutOfGas";
      // The lowest limit at which the Vault no longer says it was short of gas for the wallet.
      let [low, high] = [500_000, 1_000_000];
      expect(await outOfGas(low)).to.equal(true);
      expect(await outOfGas(high)).to.equal(false);
      while (high - low > 1) {
        const middle = Math.floor((low + high) / 2);
        if (await outOfGas(middle)) low = middle;
        else high = middle;
      }
      const seen = await this.scan(orders, signatures, fills, { from: high - 300, to: high + 300, step: 3 });
      expect(seen).to.include("VaultWalletCheckOutOfGas");
      // With gas to spare the wallet gets its whole cap, which is enough for it.
      expect(await this.outcome(orders, signatures, fills, 2_000_000)).to.deep.equal({ skipped: [], trades: 1 });
    });

    it("lets no gas limit make a wallet that hogs gas turn another wallet's honest fill into a skip", async function () {
      // The hogging wallet burns its cap down to its last 40,000 gas, then approves; the guarded
      // wallet after it needs 400,000. Below some limit the guarded wallet gets less than its cap.
      const hog = await addWalletMember(this, "ERC1271GasHoggingWallet", this.walletOwner);
      const { orders, signatures } = await signAll(this.vault, [
        { order: await this.sell(hog.walletAddress), signer: this.walletOwner },
        await this.guardedEntry(),
        { order: await this.buy(this.bob, { amount: bpc(2) }), signer: this.bob },
      ]);
      const fills = [this.fill(0, 2), this.fill(1, 2)];
      const seen = await this.scan(orders, signatures, fills, { from: 600_000, to: 1_400_000, step: 25_000 });
      // The scan crossed the band where the guarded wallet was short of its cap.
      expect(seen).to.include("VaultWalletCheckOutOfGas");
      expect(seen).to.include("settled");
    });
  });
});
