// Vault.settle skips the fills of an order its maker withdrew on chain after the
// match (cancelOrder, cancelOrdersBelowNonce, requestExit) and settles the rest of
// the batch; everything else wrong with a batch but a refused signature
// (Vault.walletRefusal.test.js) still reverts it whole.
const { expect } = require("chai");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { deployVaultWithTraders, bpc, usd, DEPOSIT_BPC, DEPOSIT_QUOTE } = require("./fixtures");
const {
  Side,
  SkipReason,
  newOrder,
  signAll,
  newFill,
  settlementAmounts,
  domainOf,
  signOrder,
  settleSigned,
  vaultEvents,
} = require("./orders");

const PRICE = usd(2);
const MAKER_FEE_BPS = 10n;
const TAKER_FEE_BPS = 20n;

/** What one fill of `amount` at PRICE, maker selling to a buying taker, moves: [base, quote] per side. */
function sellerAndBuyerDeltas(amount) {
  const { quote, buyerFee, sellerFee } = settlementAmounts(amount, PRICE, TAKER_FEE_BPS, 30n, MAKER_FEE_BPS, 30n);
  return { seller: [-amount, quote - sellerFee], buyer: [amount, -quote - buyerFee], fees: buyerFee + sellerFee };
}

// The three things a maker can do to its own order between the match and the batch.
const WITHDRAWALS = [
  {
    name: "cancelOrder",
    reason: SkipReason.OrderCancelled,
    withdraw: (vault, maker, order) => vault.connect(maker).cancelOrder(order),
  },
  {
    name: "cancelOrdersBelowNonce",
    reason: SkipReason.OrderNonceCancelled,
    withdraw: (vault, maker, order) => vault.connect(maker).cancelOrdersBelowNonce(order.nonce + 1n),
  },
  {
    name: "requestExit",
    reason: SkipReason.AccountExiting,
    withdraw: (vault, maker) => vault.connect(maker).requestExit(),
  },
];

describe("Vault: fills of withdrawn orders are skipped", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployVaultWithTraders));
    this.bpcAddress = await this.bpc.getAddress();
    this.quoteAddress = await this.quote.getAddress();
    this.sell = (signer, fields) => newOrder(this, signer, { side: Side.Sell, price: PRICE, ...fields });
    this.buy = (signer, fields) => newOrder(this, signer, { side: Side.Buy, price: PRICE, ...fields });
    this.fill = (makerIndex, takerIndex, amount = bpc(1)) =>
      newFill(makerIndex, takerIndex, amount, PRICE, MAKER_FEE_BPS, TAKER_FEE_BPS);
    this.balances = async (account) => [
      await this.vault.balanceOf(account.address, this.bpcAddress),
      await this.vault.balanceOf(account.address, this.quoteAddress),
    ];
    this.settle = (entries, fills) => settleSigned(this.vault, this.operator, entries, fills);
    this.events = (receipt, name) => vaultEvents(this.vault, receipt, name);
  });

  for (const { name, reason, withdraw } of WITHDRAWALS) {
    describe(`after ${name}`, function () {
      it("skips the fill of the withdrawn maker order and settles the others of the batch", async function () {
        // bob buys 3 BPC from alice, carol and dave; carol withdraws her order before the batch.
        const entries = [
          { order: await this.buy(this.bob, { amount: bpc(3) }), signer: this.bob },
          { order: await this.sell(this.alice), signer: this.alice },
          { order: await this.sell(this.carol), signer: this.carol },
          { order: await this.sell(this.dave), signer: this.dave },
        ];
        await withdraw(this.vault, this.carol, entries[2].order);
        const before = await this.balances(this.carol);
        const fundBefore = await this.quote.balanceOf(await this.fund.getAddress());

        const { tx, receipt, hashes } = await this.settle(entries, [this.fill(1, 0), this.fill(2, 0), this.fill(3, 0)]);

        expect(receipt.status).to.equal(1);
        await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(1n, hashes[2], reason);
        expect(this.events(receipt, "FillSkipped")).to.have.length(1);
        const trades = this.events(receipt, "Trade");
        expect(trades.map((trade) => trade.args.makerOrderHash)).to.deep.equal([hashes[1], hashes[3]]);
        const { seller, buyer, fees } = sellerAndBuyerDeltas(bpc(1));
        await expect(tx).to.emit(this.vault, "FeesCollected").withArgs(this.quoteAddress, 2n * fees, 2n * fees);
        expect(await this.quote.balanceOf(await this.fund.getAddress())).to.equal(fundBefore + 2n * fees);
        for (const member of [this.alice, this.dave]) {
          expect(await this.balances(member)).to.deep.equal([DEPOSIT_BPC + seller[0], DEPOSIT_QUOTE + seller[1]]);
        }
        expect(await this.balances(this.bob)).to.deep.equal([
          DEPOSIT_BPC + 2n * buyer[0],
          DEPOSIT_QUOTE + 2n * buyer[1],
        ]);
        expect(await this.balances(this.carol)).to.deep.equal(before);
        expect((await this.vault.orderState(hashes[2]))[0]).to.equal(0n);
        expect(await this.vault.orderState(hashes[0])).to.deep.equal([bpc(2), false]);
      });

      it("skips a fill whose taker order is withdrawn, leaving its maker untouched", async function () {
        // carol's buy takes alice's sell, bob's buy takes dave's; carol withdraws hers.
        const entries = [
          { order: await this.sell(this.alice), signer: this.alice },
          { order: await this.buy(this.carol), signer: this.carol },
          { order: await this.sell(this.dave), signer: this.dave },
          { order: await this.buy(this.bob), signer: this.bob },
        ];
        await withdraw(this.vault, this.carol, entries[1].order);
        const carolBefore = await this.balances(this.carol);

        const { tx, receipt, hashes } = await this.settle(entries, [this.fill(0, 1), this.fill(2, 3)]);

        await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hashes[1], reason);
        expect(this.events(receipt, "Trade").map((trade) => trade.args.takerOrderHash)).to.deep.equal([hashes[3]]);
        expect(await this.balances(this.alice)).to.deep.equal([DEPOSIT_BPC, DEPOSIT_QUOTE]);
        expect(await this.balances(this.carol)).to.deep.equal(carolBefore);
        expect(await this.vault.orderState(hashes[0])).to.deep.equal([0n, false]);
        const { seller, buyer } = sellerAndBuyerDeltas(bpc(1));
        expect(await this.balances(this.dave)).to.deep.equal([DEPOSIT_BPC + seller[0], DEPOSIT_QUOTE + seller[1]]);
        expect(await this.balances(this.bob)).to.deep.equal([DEPOSIT_BPC + buyer[0], DEPOSIT_QUOTE + buyer[1]]);
      });

      it("skips every fill of the withdrawn order in the batch, each with its own event", async function () {
        const entries = [
          { order: await this.sell(this.carol, { amount: bpc(3) }), signer: this.carol },
          { order: await this.buy(this.bob), signer: this.bob },
          { order: await this.sell(this.alice), signer: this.alice },
          { order: await this.buy(this.dave, { amount: bpc(2) }), signer: this.dave },
        ];
        await withdraw(this.vault, this.carol, entries[0].order);

        const { tx, receipt, hashes } = await this.settle(entries, [
          this.fill(0, 1),
          this.fill(2, 3),
          this.fill(0, 3),
        ]);

        const skipped = this.events(receipt, "FillSkipped").map((event) => [
          event.args.fillIndex,
          event.args.orderHash,
          event.args.reason,
        ]);
        expect(skipped).to.deep.equal([
          [0n, hashes[0], BigInt(reason)],
          [2n, hashes[0], BigInt(reason)],
        ]);
        expect(this.events(receipt, "Trade")).to.have.length(1);
        await expect(tx).to.emit(this.vault, "Trade").withArgs(
          hashes[2],
          hashes[3],
          this.dave.address,
          this.alice.address,
          bpc(1),
          PRICE,
          ...(() => {
            const amounts = settlementAmounts(bpc(1), PRICE, TAKER_FEE_BPS, 30n, MAKER_FEE_BPS, 30n);
            return [amounts.buyerFee, amounts.sellerFee];
          })(),
        );
        expect(await this.balances(this.bob)).to.deep.equal([DEPOSIT_BPC, DEPOSIT_QUOTE]);
        expect(await this.vault.orderState(hashes[1])).to.deep.equal([0n, false]);
        expect((await this.vault.orderState(hashes[3]))[0]).to.equal(bpc(1));
      });

      it("still reverts the batch for an operator's mistake in another fill", async function () {
        const entries = [
          { order: await this.sell(this.carol), signer: this.carol },
          { order: await this.buy(this.bob), signer: this.bob },
          { order: await this.sell(this.alice, { amount: bpc(1) }), signer: this.alice },
        ];
        await withdraw(this.vault, this.carol, entries[0].order);
        const { orders, signatures, hashes } = await signAll(this.vault, entries);
        const fills = [this.fill(0, 1), this.fill(2, 1, bpc(2))]; // alice's order holds 1 BPC
        await expect(this.vault.connect(this.operator).settle(orders, signatures, fills))
          .to.be.revertedWithCustomError(this.vault, "VaultOrderOverfilled")
          .withArgs(hashes[2], bpc(2), bpc(1));
      });

      it("still reverts for a fill of a withdrawn order at a price beyond its limit", async function () {
        const entries = [
          { order: await this.sell(this.carol), signer: this.carol },
          { order: await this.buy(this.bob), signer: this.bob },
        ];
        await withdraw(this.vault, this.carol, entries[0].order);
        const { orders, signatures, hashes } = await signAll(this.vault, entries);
        const fill = newFill(0, 1, bpc(1), PRICE - 1n, MAKER_FEE_BPS, TAKER_FEE_BPS);
        await expect(this.vault.connect(this.operator).settle(orders, signatures, [fill]))
          .to.be.revertedWithCustomError(this.vault, "VaultPriceOutsideLimit")
          .withArgs(hashes[0], PRICE - 1n, PRICE);
      });

      it("skips, not reverts, a withdrawn order with a signature that is not its maker's", async function () {
        // An exit or nonce floor is named and the signature not checked; a cancellation is found
        // by the fill, after the order's check has found the signature refused.
        const expected = name === "cancelOrder" ? SkipReason.WalletRefused : reason;
        const sell = await this.sell(this.carol);
        await withdraw(this.vault, this.carol, sell);
        const domain = await domainOf(this.vault);
        const { orders, signatures, hashes } = await signAll(this.vault, [
          { order: sell, signer: this.carol },
          { order: await this.buy(this.bob), signer: this.bob },
        ]);
        signatures[0] = await signOrder(this.alice, domain, sell);
        await expect(this.vault.connect(this.operator).settle(orders, signatures, [this.fill(0, 1)]))
          .to.emit(this.vault, "FillSkipped")
          .withArgs(0n, hashes[0], expected);
      });
    });
  }

  it("keeps the filled amount of an order cancelled after a partial fill, and skips its later fills", async function () {
    const sell = await this.sell(this.carol, { amount: bpc(3) });
    await this.settle(
      [
        { order: sell, signer: this.carol },
        { order: await this.buy(this.bob), signer: this.bob },
      ],
      [this.fill(0, 1)],
    );
    await this.vault.connect(this.carol).cancelOrder(sell);
    const carolBefore = await this.balances(this.carol);
    const bobBefore = await this.balances(this.bob);

    const { tx, receipt, hashes } = await this.settle(
      [
        { order: sell, signer: this.carol },
        { order: await this.buy(this.bob), signer: this.bob },
        { order: await this.sell(this.alice), signer: this.alice },
        { order: await this.buy(this.dave), signer: this.dave },
      ],
      [this.fill(0, 1), this.fill(2, 3)],
    );

    await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hashes[0], SkipReason.OrderCancelled);
    expect(this.events(receipt, "Trade")).to.have.length(1);
    expect(await this.vault.orderState(hashes[0])).to.deep.equal([bpc(1), true]);
    expect(await this.balances(this.carol)).to.deep.equal(carolBefore);
    expect(await this.balances(this.bob)).to.deep.equal(bobBefore);
  });

  it("names the maker order when both orders of a fill are withdrawn, and sends no fees for a batch of skips", async function () {
    const entries = [
      { order: await this.sell(this.carol), signer: this.carol },
      { order: await this.buy(this.dave), signer: this.dave },
    ];
    await this.vault.connect(this.carol).requestExit();
    await this.vault.connect(this.dave).cancelOrder(entries[1].order);

    const { tx, receipt, hashes } = await this.settle(entries, [this.fill(0, 1)]);

    await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hashes[0], SkipReason.AccountExiting);
    expect(this.events(receipt, "FillSkipped")).to.have.length(1);
    await expect(tx).not.to.emit(this.vault, "Trade");
    await expect(tx).not.to.emit(this.vault, "FeesCollected");
    await expect(tx).to.changeTokenBalances(this.quote, [this.vault, this.fund], [0n, 0n]);
  });

  it("still reverts VaultNotActiveMember for a suspended member whose order is also cancelled", async function () {
    const sell = await this.sell(this.carol);
    await this.vault.connect(this.carol).cancelOrder(sell);
    await this.registry.connect(this.registrar).suspend(this.carol.address);
    const { orders, signatures } = await signAll(this.vault, [
      { order: sell, signer: this.carol },
      { order: await this.buy(this.bob), signer: this.bob },
    ]);
    await expect(this.vault.connect(this.operator).settle(orders, signatures, [this.fill(0, 1)]))
      .to.be.revertedWithCustomError(this.vault, "VaultNotActiveMember")
      .withArgs(this.carol.address);
  });

  it("still reverts VaultSameSide for a fill of a withdrawn order against one on its side", async function () {
    const entries = [
      { order: await this.sell(this.carol), signer: this.carol },
      { order: await this.sell(this.alice), signer: this.alice },
    ];
    await this.vault.connect(this.carol).cancelOrder(entries[0].order);
    const { orders, signatures, hashes } = await signAll(this.vault, entries);
    await expect(this.vault.connect(this.operator).settle(orders, signatures, [this.fill(0, 1)]))
      .to.be.revertedWithCustomError(this.vault, "VaultSameSide")
      .withArgs(hashes[0], hashes[1]);
  });
});
