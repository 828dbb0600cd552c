// Vault.settle: batched settlement of signed orders, the balances and fees it
// moves, and every way a fill is refused. Signature domains and contract
// wallets are in Vault.signatures.test.js; cancellation in Vault.cancel.test.js.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const {
  deployVault,
  deployVaultContract,
  deployVaultWithTraders,
  fundAndDeposit,
  bpc,
  usd,
  DEPOSIT_BPC,
  DEPOSIT_QUOTE,
} = require("./fixtures");
const { Side, SkipReason, newOrder, signAll, newFill, settlementAmounts } = require("./orders");
const { Status, Tier } = require("../../scripts/lib/pool-enums");

/** Two members trading on a Vault whose quote token burns 1 % of every transfer after their deposits. */
async function deployFeeTakingVaultWithTraders() {
  const ctx = await deployVault();
  const [alice, bob] = ctx.users;
  const taxed = await (await ethers.getContractFactory("FeeOnTransferToken")).deploy("Taxed", "TAX");
  const vault = await deployVaultContract(ctx, taxed, ctx.council);
  await vault.connect(ctx.council).grantRole(await vault.OPERATOR_ROLE(), ctx.operator.address);
  for (const member of [alice, bob]) {
    await ctx.registry.connect(ctx.registrar).admit(member.address, Tier.Small);
  }
  const out = { ...ctx, quote: taxed, vault, alice, bob };
  await fundAndDeposit(out, [alice, bob]);
  await taxed.setFee(100n);
  return out;
}

describe("Vault: settlement", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployVaultWithTraders));
    this.bpcAddress = await this.bpc.getAddress();
    this.quoteAddress = await this.quote.getAddress();
    this.fundAddress = await this.fund.getAddress();
    this.sell = (signer, fields) => newOrder(this, signer, { side: Side.Sell, ...fields });
    this.buy = (signer, fields) => newOrder(this, signer, { side: Side.Buy, ...fields });
    this.balances = async (account) => [
      await this.vault.balanceOf(account.address, this.bpcAddress),
      await this.vault.balanceOf(account.address, this.quoteAddress),
    ];
    // Sign `entries` ({order, signer}) and settle `fills` from the operator.
    this.settle = async (entries, fills) => {
      const { orders, signatures, hashes } = await signAll(this.vault, entries);
      return { tx: this.vault.connect(this.operator).settle(orders, signatures, fills), hashes, orders };
    };
  });

  describe("a fill", function () {
    it("swaps base for quote at the fill price, fees from both sides to the Fund", async function () {
      const maker = await this.sell(this.alice, { price: usd(2.5), amount: bpc(4), maxFeeBps: 30n });
      const taker = await this.buy(this.bob, { price: usd(3), amount: bpc(2), maxFeeBps: 50n });
      const fill = newFill(0, 1, bpc(2), usd(2.5), 10n, 20n);
      const { tx, hashes } = await this.settle(
        [
          { order: maker, signer: this.alice },
          { order: taker, signer: this.bob },
        ],
        [fill],
      );
      const quote = usd(5); // 2 BPC at 2.5
      const sellerFee = 5_000n; // 10 bps, exact
      const buyerFee = 10_000n; // 20 bps, exact
      await expect(tx)
        .to.emit(this.vault, "Trade")
        .withArgs(hashes[0], hashes[1], this.bob.address, this.alice.address, bpc(2), quote, buyerFee, sellerFee);
      await expect(tx)
        .to.emit(this.vault, "FeesCollected")
        .withArgs(this.quoteAddress, buyerFee + sellerFee, buyerFee + sellerFee);
      await expect(tx).to.changeTokenBalances(this.quote, [this.vault, this.fund], [-(buyerFee + sellerFee), buyerFee + sellerFee]);
      expect(await this.balances(this.alice)).to.deep.equal([DEPOSIT_BPC - bpc(2), DEPOSIT_QUOTE + quote - sellerFee]);
      expect(await this.balances(this.bob)).to.deep.equal([DEPOSIT_BPC + bpc(2), DEPOSIT_QUOTE - quote - buyerFee]);
      expect(await this.vault.orderState(hashes[0])).to.deep.equal([bpc(2), false]);
      expect(await this.vault.orderState(hashes[1])).to.deep.equal([bpc(2), false]);
    });

    it("works the same way round when the maker buys", async function () {
      const maker = await this.buy(this.carol, { price: usd(2), amount: bpc(1) });
      const taker = await this.sell(this.dave, { price: usd(1.5), amount: bpc(1) });
      const { tx, hashes } = await this.settle(
        [
          { order: maker, signer: this.carol },
          { order: taker, signer: this.dave },
        ],
        [newFill(0, 1, bpc(1), usd(2), 10n, 20n)],
      );
      // The maker (carol) buys and pays its maker fee; the taker (dave) sells and pays the taker fee.
      await expect(tx)
        .to.emit(this.vault, "Trade")
        .withArgs(hashes[0], hashes[1], this.carol.address, this.dave.address, bpc(1), usd(2), 2_000n, 4_000n);
      expect(await this.balances(this.carol)).to.deep.equal([DEPOSIT_BPC + bpc(1), DEPOSIT_QUOTE - usd(2) - 2_000n]);
      expect(await this.balances(this.dave)).to.deep.equal([DEPOSIT_BPC - bpc(1), DEPOSIT_QUOTE + usd(2) - 4_000n]);
    });

    it("settles one taker against many makers, each at its own price, with one fee transfer", async function () {
      const makers = [
        { signer: this.alice, price: usd(2) },
        { signer: this.bob, price: usd(2.1) },
        { signer: this.dave, price: usd(2.2) },
      ];
      const entries = [{ order: await this.buy(this.carol, { price: usd(2.2), amount: bpc(3) }), signer: this.carol }];
      for (const { signer, price } of makers) {
        entries.push({ order: await this.sell(signer, { price, amount: bpc(1) }), signer });
      }
      const fills = makers.map(({ price }, index) => newFill(index + 1, 0, bpc(1), price, 0n, 10n));
      const { tx, hashes } = await this.settle(entries, fills);
      let totalFees = 0n;
      for (const [index, { signer, price }] of makers.entries()) {
        const buyerFee = (price * 10n) / 10_000n;
        totalFees += buyerFee;
        await expect(tx)
          .to.emit(this.vault, "Trade")
          .withArgs(hashes[index + 1], hashes[0], this.carol.address, signer.address, bpc(1), price, buyerFee, 0n);
      }
      await expect(tx).to.emit(this.vault, "FeesCollected").withArgs(this.quoteAddress, totalFees, totalFees);
      expect(await this.vault.orderState(hashes[0])).to.deep.equal([bpc(3), false]);
      expect(await this.balances(this.carol)).to.deep.equal([
        DEPOSIT_BPC + bpc(3),
        DEPOSIT_QUOTE - usd(2) - usd(2.1) - usd(2.2) - totalFees,
      ]);
    });

    it("fills an order in parts across batches, up to its amount", async function () {
      const maker = await this.sell(this.alice, { amount: bpc(5) });
      const entries = [{ order: maker, signer: this.alice }];
      const first = await this.settle(
        [...entries, { order: await this.buy(this.bob, { amount: bpc(2) }), signer: this.bob }],
        [newFill(0, 1, bpc(2), maker.price)],
      );
      await first.tx;
      const second = await this.settle(
        [...entries, { order: await this.buy(this.carol, { amount: bpc(3) }), signer: this.carol }],
        [newFill(0, 1, bpc(3), maker.price)],
      );
      await second.tx;
      expect(await this.vault.orderState(first.hashes[0])).to.deep.equal([bpc(5), false]);
    });

    it("does not transfer anything to the Fund when every fee is zero", async function () {
      const { tx } = await this.settle(
        [
          { order: await this.sell(this.alice, { maxFeeBps: 0n }), signer: this.alice },
          { order: await this.buy(this.bob, { maxFeeBps: 0n }), signer: this.bob },
        ],
        [newFill(0, 1, bpc(1), usd(2), 0n, 0n)],
      );
      await expect(tx).not.to.emit(this.vault, "FeesCollected");
      await expect(tx).to.changeTokenBalance(this.quote, this.fund, 0n);
    });

    it("rounds the scheduled fee up, but never past the exact signed cap", async function () {
      // quote = 3 units; 1 bps scheduled rounds up to 1 unit, but the 2 bps cap is 0.0006 units -> 0.
      const price = 3n;
      const { tx, hashes } = await this.settle(
        [
          { order: await this.sell(this.alice, { price, maxFeeBps: 2n }), signer: this.alice },
          { order: await this.buy(this.bob, { price, maxFeeBps: 10_000n }), signer: this.bob },
        ],
        [newFill(0, 1, bpc(1), price, 1n, 1n)],
      );
      await expect(tx)
        .to.emit(this.vault, "Trade")
        .withArgs(hashes[0], hashes[1], this.bob.address, this.alice.address, bpc(1), 3n, 1n, 0n);
      expect(settlementAmounts(bpc(1), price, 1n, 10_000n, 1n, 2n)).to.deep.equal({ quote: 3n, buyerFee: 1n, sellerFee: 0n });
    });

    it("rounds the quote amount down for the payer", async function () {
      // 3e18 - 1 base units at 2 quote units per 1e18 base units: 5.999... -> 5.
      const amount = bpc(3) - 1n;
      const { tx, hashes } = await this.settle(
        [
          { order: await this.sell(this.alice, { price: 2n, amount }), signer: this.alice },
          { order: await this.buy(this.bob, { price: 2n, amount }), signer: this.bob },
        ],
        [newFill(0, 1, amount, 2n, 0n, 0n)],
      );
      await expect(tx)
        .to.emit(this.vault, "Trade")
        .withArgs(hashes[0], hashes[1], this.bob.address, this.alice.address, amount, 5n, 0n, 0n);
    });

    it("nets a self-trade out to the fees alone", async function () {
      const { tx } = await this.settle(
        [
          { order: await this.sell(this.alice, { price: usd(2) }), signer: this.alice },
          { order: await this.buy(this.alice, { price: usd(2) }), signer: this.alice },
        ],
        [newFill(0, 1, bpc(1), usd(2), 10n, 20n)],
      );
      await expect(tx).to.emit(this.vault, "FeesCollected").withArgs(this.quoteAddress, 6_000n, 6_000n);
      expect(await this.balances(this.alice)).to.deep.equal([DEPOSIT_BPC, DEPOSIT_QUOTE - 6_000n]);
    });

    it("reports the fees that left the Vault and what reached the Fund of a quote token taking a fee", async function () {
      const ctx = await loadFixture(deployFeeTakingVaultWithTraders);
      const maker = await newOrder(ctx, ctx.alice, { side: Side.Sell, price: usd(2.5), amount: bpc(2) });
      const taker = await newOrder(ctx, ctx.bob, { side: Side.Buy, price: usd(2.5), amount: bpc(2) });
      const { orders, signatures } = await signAll(ctx.vault, [
        { order: maker, signer: ctx.alice },
        { order: taker, signer: ctx.bob },
      ]);
      const tx = ctx.vault.connect(ctx.operator).settle(orders, signatures, [newFill(0, 1, bpc(2), usd(2.5), 10n, 20n)]);
      const fees = 15_000n; // 10 + 20 bps of 5 quote units
      const received = fees - fees / 100n; // 1 % burnt on the way to the Fund
      await expect(tx)
        .to.emit(ctx.vault, "FeesCollected")
        .withArgs(await ctx.quote.getAddress(), fees, received);
      await expect(tx).to.changeTokenBalances(ctx.quote, [ctx.vault, ctx.fund], [-fees, received]);
    });

    it("is atomic: one refused fill reverts the whole batch", async function () {
      const sell = await this.sell(this.alice, { amount: bpc(1) });
      const entries = [
        { order: sell, signer: this.alice },
        { order: await this.buy(this.bob, { amount: bpc(1) }), signer: this.bob },
        { order: await this.buy(this.outsider, { amount: bpc(1) }), signer: this.outsider },
      ];
      const { tx } = await this.settle(entries, [newFill(0, 1, bpc(1), sell.price), newFill(0, 2, bpc(1), sell.price)]);
      await expect(tx).to.be.revertedWithCustomError(this.vault, "VaultNotActiveMember");
      expect(await this.balances(this.alice)).to.deep.equal([DEPOSIT_BPC, DEPOSIT_QUOTE]);
      expect(await this.balances(this.bob)).to.deep.equal([DEPOSIT_BPC, DEPOSIT_QUOTE]);
    });
  });

  describe("refusals", function () {
    beforeEach(async function () {
      // A valid pair; each test breaks one thing.
      this.pair = async (makerFields = {}, takerFields = {}) => [
        { order: await this.sell(this.alice, makerFields), signer: this.alice },
        { order: await this.buy(this.bob, takerFields), signer: this.bob },
      ];
      this.fullFill = (entries, overrides = {}) => ({
        ...newFill(0, 1, entries[0].order.amount, entries[0].order.price),
        ...overrides,
      });
    });

    it("reverts AccessControlUnauthorizedAccount for a caller without OPERATOR_ROLE", async function () {
      const entries = await this.pair();
      const { orders, signatures } = await signAll(this.vault, entries);
      await expect(this.vault.connect(this.alice).settle(orders, signatures, [this.fullFill(entries)]))
        .to.be.revertedWithCustomError(this.vault, "AccessControlUnauthorizedAccount")
        .withArgs(this.alice.address, await this.vault.OPERATOR_ROLE());
    });

    it("reverts VaultLengthMismatch when orders and signatures differ in number", async function () {
      const entries = await this.pair();
      const { orders, signatures } = await signAll(this.vault, entries);
      await expect(this.vault.connect(this.operator).settle(orders, signatures.slice(1), []))
        .to.be.revertedWithCustomError(this.vault, "VaultLengthMismatch")
        .withArgs(2, 1);
    });

    it("reverts VaultUnknownOrderIndex for a fill pointing past the order list", async function () {
      const entries = await this.pair();
      const fills = [this.fullFill(entries), this.fullFill(entries, { takerIndex: 2 })];
      await expect((await this.settle(entries, fills)).tx)
        .to.be.revertedWithCustomError(this.vault, "VaultUnknownOrderIndex")
        .withArgs(1, 2);
      await expect((await this.settle(entries, [this.fullFill(entries, { makerIndex: 7 })])).tx)
        .to.be.revertedWithCustomError(this.vault, "VaultUnknownOrderIndex")
        .withArgs(0, 7);
    });

    it("reverts VaultUnsupportedMarket for an order on other tokens", async function () {
      const other = await (await ethers.getContractFactory("TestToken")).deploy("Other", "OTH", 6);
      const entries = await this.pair({}, { quoteToken: await other.getAddress() });
      const { tx, hashes } = await this.settle(entries, [this.fullFill(entries)]);
      await expect(tx)
        .to.be.revertedWithCustomError(this.vault, "VaultUnsupportedMarket")
        .withArgs(hashes[1], this.bpcAddress, await other.getAddress());
    });

    it("reverts VaultOrderExpired once the block time reaches the expiry", async function () {
      const expiry = BigInt(await time.latest()) + 100n;
      const entries = await this.pair({ expiry });
      await time.setNextBlockTimestamp(expiry);
      const { tx, hashes } = await this.settle(entries, [this.fullFill(entries)]);
      await expect(tx).to.be.revertedWithCustomError(this.vault, "VaultOrderExpired").withArgs(hashes[0], expiry);
    });

    it("accepts an order up to the second before its expiry", async function () {
      const expiry = BigInt(await time.latest()) + 100n;
      const entries = await this.pair({ expiry });
      await time.setNextBlockTimestamp(expiry - 1n);
      await expect((await this.settle(entries, [this.fullFill(entries)])).tx).to.emit(this.vault, "Trade");
    });

    // An account without code may have had it when it signed (EIP-7702): a signature it does not
    // accept now is its refusal, and only that order's fills are skipped (Vault.walletRefusal.test.js).
    it("skips the fill, moving nothing, when another key signed the order", async function () {
      const entries = await this.pair();
      entries[0].signer = this.carol;
      const [aliceBefore, bobBefore] = [await this.balances(this.alice), await this.balances(this.bob)];
      const { tx, hashes } = await this.settle(entries, [this.fullFill(entries)]);
      await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hashes[0], SkipReason.WalletRefused);
      await expect(tx).not.to.emit(this.vault, "Trade");
      expect([await this.balances(this.alice), await this.balances(this.bob)]).to.deep.equal([aliceBefore, bobBefore]);
    });

    it("skips the fill when a signed field was changed (a better price for the taker)", async function () {
      const entries = await this.pair();
      const { orders, signatures } = await signAll(this.vault, entries);
      const forged = { ...orders[0], price: orders[0].price - 1n };
      const forgedHash = await this.vault.hashOrder(forged);
      const tx = this.vault.connect(this.operator).settle([forged, orders[1]], signatures, [this.fullFill(entries)]);
      await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, forgedHash, SkipReason.WalletRefused);
      await expect(tx).not.to.emit(this.vault, "Trade");
    });

    it("reverts VaultOrderOverfilled on replay of a settled batch", async function () {
      const entries = await this.pair();
      const { orders, signatures, hashes } = await signAll(this.vault, entries);
      const fills = [this.fullFill(entries)];
      await this.vault.connect(this.operator).settle(orders, signatures, fills);
      const amount = orders[0].amount;
      await expect(this.vault.connect(this.operator).settle(orders, signatures, fills))
        .to.be.revertedWithCustomError(this.vault, "VaultOrderOverfilled")
        .withArgs(hashes[0], amount * 2n, amount);
    });

    it("reverts VaultOrderOverfilled for a fill beyond the open amount, also within one batch", async function () {
      const entries = await this.pair({ amount: bpc(3) }, { amount: bpc(10) });
      const price = entries[0].order.price;
      const { tx, hashes } = await this.settle(entries, [newFill(0, 1, bpc(2), price), newFill(0, 1, bpc(2), price)]);
      await expect(tx)
        .to.be.revertedWithCustomError(this.vault, "VaultOrderOverfilled")
        .withArgs(hashes[0], bpc(4), bpc(3));
    });

    it("reverts VaultPriceOutsideLimit for a price above the buyer's limit", async function () {
      const entries = await this.pair({ price: usd(2) }, { price: usd(2.5) });
      const { tx, hashes } = await this.settle(entries, [this.fullFill(entries, { price: usd(2.5) + 1n })]);
      await expect(tx)
        .to.be.revertedWithCustomError(this.vault, "VaultPriceOutsideLimit")
        .withArgs(hashes[1], usd(2.5) + 1n, usd(2.5));
    });

    it("reverts VaultPriceOutsideLimit for a price below the seller's limit", async function () {
      const entries = await this.pair({ price: usd(2) }, { price: usd(2.5) });
      const { tx, hashes } = await this.settle(entries, [this.fullFill(entries, { price: usd(2) - 1n })]);
      await expect(tx)
        .to.be.revertedWithCustomError(this.vault, "VaultPriceOutsideLimit")
        .withArgs(hashes[0], usd(2) - 1n, usd(2));
    });

    it("accepts any price between both limits, limits included", async function () {
      const entries = await this.pair({ price: usd(2), amount: bpc(3) }, { price: usd(2.5), amount: bpc(3) });
      const fills = [usd(2), usd(2.25), usd(2.5)].map((price) => newFill(0, 1, bpc(1), price));
      await expect((await this.settle(entries, fills)).tx).to.emit(this.vault, "Trade");
    });

    it("reverts VaultFeeAboveCap for a fee rate above the order's cap", async function () {
      const entries = await this.pair({ maxFeeBps: 10n }, { maxFeeBps: 30n });
      const maker = await this.settle(entries, [this.fullFill(entries, { makerFeeBps: 11n, takerFeeBps: 30n })]);
      await expect(maker.tx).to.be.revertedWithCustomError(this.vault, "VaultFeeAboveCap").withArgs(maker.hashes[0], 11n, 10n);
      const taker = await this.settle(entries, [this.fullFill(entries, { makerFeeBps: 10n, takerFeeBps: 31n })]);
      await expect(taker.tx).to.be.revertedWithCustomError(this.vault, "VaultFeeAboveCap").withArgs(taker.hashes[1], 31n, 30n);
    });

    it("reverts VaultFeeAboveCap above 100 % even when the order's cap is higher", async function () {
      const entries = await this.pair({ maxFeeBps: 65_535n });
      const { tx, hashes } = await this.settle(entries, [this.fullFill(entries, { makerFeeBps: 10_001n })]);
      await expect(tx).to.be.revertedWithCustomError(this.vault, "VaultFeeAboveCap").withArgs(hashes[0], 10_001n, 10_000n);
    });

    it("reverts VaultSameSide for two orders on one side", async function () {
      const entries = [
        { order: await this.sell(this.alice), signer: this.alice },
        { order: await this.sell(this.bob), signer: this.bob },
      ];
      const { tx, hashes } = await this.settle(entries, [newFill(0, 1, bpc(1), entries[0].order.price)]);
      await expect(tx).to.be.revertedWithCustomError(this.vault, "VaultSameSide").withArgs(hashes[0], hashes[1]);
    });

    it("reverts VaultSameSide for an order filled against itself", async function () {
      const entries = await this.pair();
      const { tx, hashes } = await this.settle(entries, [this.fullFill(entries, { takerIndex: 0 })]);
      await expect(tx).to.be.revertedWithCustomError(this.vault, "VaultSameSide").withArgs(hashes[0], hashes[0]);
    });

    it("reverts VaultFillTooSmall when the quote amount rounds to zero", async function () {
      const entries = await this.pair({ price: 1n }, { price: 1n });
      const { tx } = await this.settle(entries, [this.fullFill(entries, { baseAmount: bpc(1) - 1n, price: 1n })]);
      await expect(tx).to.be.revertedWithCustomError(this.vault, "VaultFillTooSmall").withArgs(bpc(1) - 1n, 1n);
      const zero = await this.settle(entries, [this.fullFill(entries, { baseAmount: 0n })]);
      await expect(zero.tx).to.be.revertedWithCustomError(this.vault, "VaultFillTooSmall").withArgs(0n, entries[0].order.price);
    });

    it("reverts VaultNotActiveMember for a non-member, as maker or taker", async function () {
      const entries = await this.pair();
      entries[1] = { order: await this.buy(this.outsider), signer: this.outsider };
      await expect((await this.settle(entries, [this.fullFill(entries)])).tx)
        .to.be.revertedWithCustomError(this.vault, "VaultNotActiveMember")
        .withArgs(this.outsider.address);
    });

    for (const [action, status] of [
      ["suspend", Status.Suspended],
      ["expel", Status.Expelled],
    ]) {
      it(`reverts VaultNotActiveMember for a member who was made ${action === "suspend" ? "suspended" : "expelled"}`, async function () {
        await this.registry.connect(this.registrar)[action](this.alice.address);
        expect((await this.registry.memberOf(this.alice.address)).status).to.equal(status);
        const entries = await this.pair();
        await expect((await this.settle(entries, [this.fullFill(entries)])).tx)
          .to.be.revertedWithCustomError(this.vault, "VaultNotActiveMember")
          .withArgs(this.alice.address);
      });
    }

    it("trades again once a suspended member is reinstated", async function () {
      await this.registry.connect(this.registrar).suspend(this.bob.address);
      await this.registry.connect(this.registrar).reinstate(this.bob.address);
      const entries = await this.pair();
      await expect((await this.settle(entries, [this.fullFill(entries)])).tx).to.emit(this.vault, "Trade");
    });

    it("skips, without reverting, the fill of an account that requested an exit", async function () {
      await this.vault.connect(this.bob).requestExit();
      const entries = await this.pair();
      const { tx, hashes } = await this.settle(entries, [this.fullFill(entries)]);
      await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hashes[1], SkipReason.AccountExiting);
      await expect(tx).not.to.emit(this.vault, "Trade");
    });

    it("reverts VaultInsufficientBalance when the buyer cannot pay quote plus fee", async function () {
      // bob buys DEPOSIT_QUOTE worth: the quote amount alone empties its balance, the fee is short.
      const price = DEPOSIT_QUOTE;
      const entries = await this.pair({ price, amount: bpc(1), maxFeeBps: 0n }, { price, amount: bpc(1), maxFeeBps: 10n });
      const { tx } = await this.settle(entries, [newFill(0, 1, bpc(1), price, 0n, 10n)]);
      await expect(tx)
        .to.be.revertedWithCustomError(this.vault, "VaultInsufficientBalance")
        .withArgs(this.bob.address, this.quoteAddress, DEPOSIT_QUOTE, DEPOSIT_QUOTE + DEPOSIT_QUOTE / 1000n);
    });

    it("reverts VaultInsufficientBalance when the seller lacks the base amount", async function () {
      const amount = DEPOSIT_BPC + 1n;
      const entries = await this.pair({ amount, price: 1_000n }, { amount, price: 1_000n });
      const { tx } = await this.settle(entries, [newFill(0, 1, amount, 1_000n)]);
      await expect(tx)
        .to.be.revertedWithCustomError(this.vault, "VaultInsufficientBalance")
        .withArgs(this.alice.address, this.bpcAddress, DEPOSIT_BPC, amount);
    });
  });
});
