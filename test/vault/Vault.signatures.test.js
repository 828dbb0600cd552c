// Vault order signatures: the EIP-712 domain binds an order to one chain and one
// Vault, and contract wallets sign through ERC-1271. Also the deployment checks.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const { addWalletMember, deployVaultWithTraders, deployVaultContract, bpc, usd, EXIT_DELAY } = require("./fixtures");
const { Side, SkipReason, newOrder, signAll, signOrder, orderHash, newFill, domainOf, ORDER_TYPES } = require("./orders");

/** deployVaultWithTraders plus an ERC-1271 wallet owned by `walletOwner`, admitted, funded and deposited. */
async function deployWithWallet() {
  const ctx = await deployVaultWithTraders();
  const [walletOwner, stranger] = ctx.users;
  const { wallet, walletAddress } = await addWalletMember(ctx, "ERC1271Wallet", walletOwner);
  return { ...ctx, wallet, walletAddress, walletOwner, stranger };
}

describe("Vault: signatures and deployment", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployWithWallet));
    this.domain = await domainOf(this.vault);
    this.settleSigned = async (orders, signatures, price = orders[0].price) =>
      this.vault.connect(this.operator).settle(orders, signatures, [newFill(0, 1, bpc(1), price)]);
  });

  describe("EIP-712 domain", function () {
    it("hashOrder and domainSeparator equal the off-chain EIP-712 computation", async function () {
      const order = await newOrder(this, this.alice, { side: Side.Buy, price: 123_456_789n, maxFeeBps: 65_535n });
      expect(await this.vault.hashOrder(order)).to.equal(orderHash(this.domain, order));
      expect(await this.vault.domainSeparator()).to.equal(ethers.TypedDataEncoder.hashDomain(this.domain));
      const domain = await this.vault.eip712Domain();
      expect([domain.name, domain.version, domain.chainId, domain.verifyingContract]).to.deep.equal([
        "BPC Vault",
        "1",
        this.domain.chainId,
        this.domain.verifyingContract,
      ]);
    });

    for (const [label, override] of [
      ["another chain id", async () => ({ chainId: 1n })],
      ["another Vault", async function () {
        return { verifyingContract: await this.otherVault.getAddress() };
      }],
      ["another domain name", async () => ({ name: "BPC Vault v0" })],
    ]) {
      it(`moves nothing for an order signed for ${label}: its fill is skipped as refused`, async function () {
        this.otherVault = await deployVaultContract(this, this.quote, this.council);
        const sell = await newOrder(this, this.alice, { side: Side.Sell });
        const buy = await newOrder(this, this.bob, { side: Side.Buy });
        const forged = { ...this.domain, ...(await override.call(this)) };
        const signatures = [await signOrder(this.alice, forged, sell), await signOrder(this.bob, this.domain, buy)];
        const tx = this.settleSigned([sell, buy], signatures);
        await expect(tx)
          .to.emit(this.vault, "FillSkipped")
          .withArgs(0n, orderHash(this.domain, sell), SkipReason.WalletRefused);
        await expect(tx).not.to.emit(this.vault, "Trade");
      });
    }

    it("moves nothing for a malformed or a high-s signature: its fill is skipped as refused", async function () {
      const sell = await newOrder(this, this.alice, { side: Side.Sell });
      const buy = await newOrder(this, this.bob, { side: Side.Buy });
      const good = ethers.Signature.from(await signOrder(this.alice, this.domain, sell));
      const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
      const highS = ethers.concat([good.r, ethers.toBeHex(n - BigInt(good.s), 32), good.v === 27 ? "0x1c" : "0x1b"]);
      for (const signature of ["0x", good.serialized.slice(0, -2), highS]) {
        const tx = this.settleSigned([sell, buy], [signature, await signOrder(this.bob, this.domain, buy)]);
        await expect(tx)
          .to.emit(this.vault, "FillSkipped")
          .withArgs(0n, orderHash(this.domain, sell), SkipReason.WalletRefused);
        await expect(tx).not.to.emit(this.vault, "Trade");
      }
    });
  });

  describe("ERC-1271 contract wallet", function () {
    it("settles an order its owner signed for it", async function () {
      const sell = await newOrder(this, this.walletAddress, { side: Side.Sell, amount: bpc(1) });
      const { orders, signatures, hashes } = await signAll(this.vault, [
        { order: sell, signer: this.walletOwner },
        { order: await newOrder(this, this.bob, { side: Side.Buy }), signer: this.bob },
      ]);
      await expect(this.settleSigned(orders, signatures))
        .to.emit(this.vault, "Trade")
        .withArgs(hashes[0], hashes[1], this.bob.address, this.walletAddress, bpc(1), usd(2), 4_000n, 2_000n);
      expect(await this.vault.balanceOf(this.walletAddress, await this.bpc.getAddress())).to.equal(bpc(99));
    });

    it("skips the fill, WalletRefused, when the wallet does not accept the signature", async function () {
      // A wallet's answer can change after the match, so the Vault cannot tell a signature it
      // never accepted from one it stopped accepting: either is the wallet's say, not a revert.
      const sell = await newOrder(this, this.walletAddress, { side: Side.Sell });
      const { orders, signatures, hashes } = await signAll(this.vault, [
        { order: sell, signer: this.stranger },
        { order: await newOrder(this, this.bob, { side: Side.Buy }), signer: this.bob },
      ]);
      const tx = await this.settleSigned(orders, signatures);
      await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hashes[0], SkipReason.WalletRefused);
      await expect(tx).not.to.emit(this.vault, "Trade");
      expect(await this.vault.orderState(hashes[0])).to.deep.equal([0n, false]);
    });

    it("gives a wallet at most WALLET_CHECK_GAS to answer: one that burns what it gets costs the batch one cap", async function () {
      const cap = await this.vault.WALLET_CHECK_GAS();
      expect(cap).to.equal(500_000n);
      const { walletAddress } = await addWalletMember(this, "ERC1271GasHoggingWallet", this.walletOwner);
      const sell = await newOrder(this, walletAddress, { side: Side.Sell, amount: bpc(1) });
      const { orders, signatures } = await signAll(this.vault, [
        { order: sell, signer: this.walletOwner },
        { order: await newOrder(this, this.bob, { side: Side.Buy }), signer: this.bob },
      ]);
      // Given the whole transaction's gas, the wallet would take 63/64 of whatever the estimate
      // offered; capped, it burns its cap and approves.
      const receipt = await (await this.settleSigned(orders, signatures)).wait();
      expect(await this.vault.balanceOf(walletAddress, await this.bpc.getAddress())).to.equal(bpc(99));
      expect(receipt.gasUsed).to.be.lessThan(cap + 300_000n);
    });

    it("skips the fill of a wallet that never answers within its whole cap, whatever the gas above it", async function () {
      const { walletAddress } = await addWalletMember(this, "ERC1271GasBurningWallet", this.walletOwner);
      const sell = await newOrder(this, walletAddress, { side: Side.Sell });
      const { orders, signatures, hashes } = await signAll(this.vault, [
        { order: sell, signer: this.walletOwner },
        { order: await newOrder(this, this.bob, { side: Side.Buy }), signer: this.bob },
      ]);
      const fills = [newFill(0, 1, bpc(1), sell.price)];
      const cap = await this.vault.WALLET_CHECK_GAS();
      for (const gasLimit of [1_000_000n, 3_000_000n, 10_000_000n]) {
        const tx = await this.vault.connect(this.operator).settle(orders, signatures, fills, { gasLimit });
        await expect(tx).to.emit(this.vault, "FillSkipped").withArgs(0n, hashes[0], SkipReason.WalletRefused);
        // The wallet burnt its cap and no more, whatever the transaction had.
        expect((await tx.wait()).gasUsed).to.be.within(cap, cap + 150_000n);
      }
    });

    it("reverts VaultWalletCheckOutOfGas, not the order, when the transaction left the wallet less than its cap", async function () {
      const { walletAddress } = await addWalletMember(this, "ERC1271GasBurningWallet", this.walletOwner);
      const sell = await newOrder(this, walletAddress, { side: Side.Sell });
      const { orders, signatures } = await signAll(this.vault, [
        { order: sell, signer: this.walletOwner },
        { order: await newOrder(this, this.bob, { side: Side.Buy }), signer: this.bob },
      ]);
      const fills = [newFill(0, 1, bpc(1), sell.price)];
      await expect(this.vault.connect(this.operator).settle(orders, signatures, fills, { gasLimit: 400_000 }))
        .to.be.revertedWithCustomError(this.vault, "VaultWalletCheckOutOfGas")
        .withArgs(walletAddress);
    });

    it("lets the wallet cancel its order", async function () {
      const sell = await newOrder(this, this.walletAddress, { side: Side.Sell });
      await expect(
        this.wallet.connect(this.walletOwner).execute(await this.vault.getAddress(), this.vault.interface.encodeFunctionData("cancelOrder", [sell])),
      )
        .to.emit(this.vault, "OrderCancelled")
        .withArgs(orderHash(this.domain, sell), this.walletAddress);
    });
  });

  describe("deployment", function () {
    it("refuses a zero address for any constructor address, and one token for both sides", async function () {
      const factory = await ethers.getContractFactory("Vault");
      const valid = [
        this.council.address,
        await this.bpc.getAddress(),
        await this.quote.getAddress(),
        await this.registry.getAddress(),
        await this.fund.getAddress(),
      ];
      for (let position = 0; position < valid.length; position++) {
        const args = valid.map((value, index) => (index === position ? ethers.ZeroAddress : value));
        await expect(factory.deploy(...args, EXIT_DELAY)).to.be.revertedWithCustomError(factory, "VaultZeroAddress");
      }
      await expect(factory.deploy(valid[0], valid[1], valid[1], valid[3], valid[4], EXIT_DELAY))
        .to.be.revertedWithCustomError(factory, "VaultSameToken")
        .withArgs(valid[1]);
      await expect(factory.deploy(...valid, 30 * 86_400 + 1))
        .to.be.revertedWithCustomError(factory, "VaultExitDelayTooLong")
        .withArgs(30 * 86_400 + 1, 30 * 86_400);
    });

    it("points at the pool's contracts and gives the council only the admin role", async function () {
      expect(await this.vault.baseToken()).to.equal(await this.bpc.getAddress());
      expect(await this.vault.quoteToken()).to.equal(await this.quote.getAddress());
      expect(await this.vault.registry()).to.equal(await this.registry.getAddress());
      expect(await this.vault.fund()).to.equal(await this.fund.getAddress());
      expect(await this.vault.exitDelay()).to.equal(BigInt(EXIT_DELAY));
      expect(await this.vault.hasRole(await this.vault.DEFAULT_ADMIN_ROLE(), this.council.address)).to.equal(true);
      expect(await this.vault.hasRole(await this.vault.OPERATOR_ROLE(), this.council.address)).to.equal(false);
    });

    it("keeps the EIP-712 order type string the service signs", async function () {
      const encoder = new ethers.TypedDataEncoder(ORDER_TYPES);
      expect(encoder.encodeType("Order")).to.equal(
        "Order(address maker,address baseToken,address quoteToken,uint8 side,uint256 price,uint256 amount," +
          "uint16 maxFeeBps,uint64 nonce,uint64 expiry)",
      );
    });
  });
});
