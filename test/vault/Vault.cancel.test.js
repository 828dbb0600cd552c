// Vault: makers cancel one order, or every order below a nonce, on chain.
const { expect } = require("chai");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { deployVaultWithTraders, bpc } = require("./fixtures");
const { Side, SkipReason, newOrder, signAll, newFill, orderHash, domainOf } = require("./orders");

describe("Vault: cancellation", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployVaultWithTraders));
    this.domain = await domainOf(this.vault);
    this.settlePair = async (sell, buy) => {
      const { orders, signatures, hashes } = await signAll(this.vault, [
        { order: sell, signer: this.alice },
        { order: buy, signer: this.bob },
      ]);
      return { tx: this.vault.connect(this.operator).settle(orders, signatures, [newFill(0, 1, bpc(1), sell.price)]), hashes };
    };
  });

  describe("cancelOrder", function () {
    it("marks the order cancelled, keeps its filled amount, and settlement skips its fills", async function () {
      const sell = await newOrder(this, this.alice, { side: Side.Sell, amount: bpc(3) });
      await (await this.settlePair(sell, await newOrder(this, this.bob, { side: Side.Buy }))).tx;
      const hash = orderHash(this.domain, sell);
      await expect(this.vault.connect(this.alice).cancelOrder(sell))
        .to.emit(this.vault, "OrderCancelled")
        .withArgs(hash, this.alice.address);
      expect(await this.vault.orderState(hash)).to.deep.equal([bpc(1), true]);
      const { tx } = await this.settlePair(sell, await newOrder(this, this.bob, { side: Side.Buy }));
      await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hash, SkipReason.OrderCancelled);
      await expect(tx).not.to.emit(this.vault, "Trade");
      expect(await this.vault.orderState(hash)).to.deep.equal([bpc(1), true]);
    });

    it("cancels an order that never reached the chain", async function () {
      const buy = await newOrder(this, this.bob, { side: Side.Buy });
      await this.vault.connect(this.bob).cancelOrder(buy);
      const { tx, hashes } = await this.settlePair(await newOrder(this, this.alice, { side: Side.Sell }), buy);
      await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hashes[1], SkipReason.OrderCancelled);
      await expect(tx).not.to.emit(this.vault, "Trade");
    });

    it("reverts VaultNotOrderMaker for anyone but the maker", async function () {
      const sell = await newOrder(this, this.alice, { side: Side.Sell });
      await expect(this.vault.connect(this.operator).cancelOrder(sell))
        .to.be.revertedWithCustomError(this.vault, "VaultNotOrderMaker")
        .withArgs(orderHash(this.domain, sell), this.alice.address, this.operator.address);
    });

    it("reverts VaultOrderCancelled for a second cancellation", async function () {
      const sell = await newOrder(this, this.alice, { side: Side.Sell });
      await this.vault.connect(this.alice).cancelOrder(sell);
      await expect(this.vault.connect(this.alice).cancelOrder(sell))
        .to.be.revertedWithCustomError(this.vault, "VaultOrderCancelled")
        .withArgs(orderHash(this.domain, sell));
    });
  });

  describe("cancelOrdersBelowNonce", function () {
    it("skips the fills of orders below the new minimum nonce and settles those at or above it", async function () {
      const old = await newOrder(this, this.alice, { side: Side.Sell, nonce: 41n });
      const current = await newOrder(this, this.alice, { side: Side.Sell, nonce: 42n });
      await expect(this.vault.connect(this.alice).cancelOrdersBelowNonce(42n))
        .to.emit(this.vault, "NonceCancelled")
        .withArgs(this.alice.address, 42n);
      expect(await this.vault.minValidNonce(this.alice.address)).to.equal(42n);
      expect((await this.vault.accountOf(this.alice.address)).hasNonceFloor).to.equal(true);

      const skipped = await this.settlePair(old, await newOrder(this, this.bob, { side: Side.Buy }));
      await expect(skipped.tx)
        .to.emit(this.vault, "FillSkipped")
        .withArgs(0n, skipped.hashes[0], SkipReason.OrderNonceCancelled);
      await expect(skipped.tx).not.to.emit(this.vault, "Trade");
      const accepted = await this.settlePair(current, await newOrder(this, this.bob, { side: Side.Buy }));
      await expect(accepted.tx).to.emit(this.vault, "Trade");
    });

    it("concerns only the caller's orders", async function () {
      await this.vault.connect(this.alice).cancelOrdersBelowNonce(1_000_000n);
      const { tx } = await this.settlePair(
        await newOrder(this, this.alice, { side: Side.Sell, nonce: 1_000_000n }),
        await newOrder(this, this.bob, { side: Side.Buy, nonce: 1n }),
      );
      await expect(tx).to.emit(this.vault, "Trade");
    });

    it("reverts VaultNonceNotIncreasing unless the minimum rises", async function () {
      await this.vault.connect(this.alice).cancelOrdersBelowNonce(10n);
      for (const requested of [10n, 9n]) {
        await expect(this.vault.connect(this.alice).cancelOrdersBelowNonce(requested))
          .to.be.revertedWithCustomError(this.vault, "VaultNonceNotIncreasing")
          .withArgs(this.alice.address, 10n, requested);
      }
      await expect(this.vault.connect(this.bob).cancelOrdersBelowNonce(0n))
        .to.be.revertedWithCustomError(this.vault, "VaultNonceNotIncreasing")
        .withArgs(this.bob.address, 0n, 0n);
    });

    it("leaves the balances in the account word untouched", async function () {
      const before = await this.vault.accountOf(this.alice.address);
      await this.vault.connect(this.alice).cancelOrdersBelowNonce(5n);
      const after = await this.vault.accountOf(this.alice.address);
      expect([after.baseBalance, after.quoteBalance, after.exitAvailableAt]).to.deep.equal([
        before.baseBalance,
        before.quoteBalance,
        before.exitAvailableAt,
      ]);
    });
  });
});
