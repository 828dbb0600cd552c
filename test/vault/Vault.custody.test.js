// Vault custody: deposits, withdrawals co-signed by the operator, and a hostile
// token that tries to re-enter the Vault while it moves tokens.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { anyValue } = require("@nomicfoundation/hardhat-chai-matchers/withArgs");
const { deployVault, deployVaultWithTraders, deployVaultContract, bpc, usd, DEPOSIT_BPC, DEPOSIT_QUOTE } = require("./fixtures");
const { authoriseWithdrawal, domainOf, WITHDRAWAL_TYPES } = require("./orders");

/** deployVault with a second Vault whose quote token is the hostile ReentrantToken. */
async function deployHostileVault() {
  const ctx = await deployVault();
  const [mallory] = ctx.users;
  const hostile = await (await ethers.getContractFactory("ReentrantToken")).deploy("Hostile", "HOST");
  const vault = await deployVaultContract(ctx, hostile, ctx.council);
  await vault.connect(ctx.council).grantRole(await vault.OPERATOR_ROLE(), ctx.operator.address);
  await hostile.mint(mallory.address, 1_000n);
  await hostile.connect(mallory).approve(await vault.getAddress(), ethers.MaxUint256);
  return { ...ctx, hostile, hostileVault: vault, mallory };
}

/** deployVault with a second Vault whose quote token burns a share of every transfer. */
async function deployFeeTakingVault() {
  const ctx = await deployVault();
  const [payer] = ctx.users;
  const taxed = await (await ethers.getContractFactory("FeeOnTransferToken")).deploy("Taxed", "TAX");
  const vault = await deployVaultContract(ctx, taxed, ctx.council);
  await taxed.mint(payer.address, 1_000n);
  await taxed.connect(payer).approve(await vault.getAddress(), ethers.MaxUint256);
  return { taxed, taxedVault: vault, payer };
}

describe("Vault: custody", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployVaultWithTraders));
    this.bpcAddress = await this.bpc.getAddress();
    this.quoteAddress = await this.quote.getAddress();
    this.withdraw = async (account, fields, signer = this.operator) => {
      const auth = await authoriseWithdrawal(this.vault, signer, { account: account.address, ...fields });
      return {
        auth,
        tx: this.vault.connect(account).withdraw(auth.token, auth.amount, auth.nonce, auth.expiry, auth.signature),
      };
    };
  });

  describe("deposit", function () {
    it("pulls the tokens and credits the caller", async function () {
      const tx = this.vault.connect(this.alice).deposit(this.quoteAddress, usd(12.5));
      await expect(tx).to.emit(this.vault, "Deposited").withArgs(this.alice.address, this.quoteAddress, usd(12.5));
      await expect(tx).to.changeTokenBalances(this.quote, [this.alice, this.vault], [-usd(12.5), usd(12.5)]);
      expect(await this.vault.balanceOf(this.alice.address, this.quoteAddress)).to.equal(DEPOSIT_QUOTE + usd(12.5));
    });

    it("is open to non-members, who can take their tokens back", async function () {
      expect(await this.vault.balanceOf(this.outsider.address, this.bpcAddress)).to.equal(DEPOSIT_BPC);
      const { tx } = await this.withdraw(this.outsider, { token: this.bpcAddress, amount: DEPOSIT_BPC, nonce: 1n });
      await expect(tx).to.changeTokenBalance(this.bpc, this.outsider, DEPOSIT_BPC);
    });

    it("reverts VaultZeroAmount for zero", async function () {
      await expect(this.vault.connect(this.alice).deposit(this.bpcAddress, 0n)).to.be.revertedWithCustomError(
        this.vault,
        "VaultZeroAmount",
      );
    });

    it("credits what arrived from a token that takes a fee, and reverts VaultZeroAmount when nothing does", async function () {
      const { taxed, taxedVault, payer } = await loadFixture(deployFeeTakingVault);
      const token = await taxed.getAddress();
      await taxed.setFee(1_000n); // 10%
      await expect(taxedVault.connect(payer).deposit(token, 100n))
        .to.emit(taxedVault, "Deposited")
        .withArgs(payer.address, token, 90n);
      expect(await taxedVault.balanceOf(payer.address, token)).to.equal(90n);

      await taxed.setFee(10_000n); // all of it: nothing arrives, and nothing is credited
      await expect(taxedVault.connect(payer).deposit(token, 100n)).to.be.revertedWithCustomError(
        taxedVault,
        "VaultZeroAmount",
      );
      expect(await taxedVault.balanceOf(payer.address, token)).to.equal(90n);
      expect(await taxed.balanceOf(payer.address)).to.equal(900n);
    });

    it("reverts VaultUnsupportedToken for any token but base and quote", async function () {
      const other = await (await ethers.getContractFactory("TestToken")).deploy("Other", "OTH", 18);
      await expect(this.vault.connect(this.alice).deposit(await other.getAddress(), 1n))
        .to.be.revertedWithCustomError(this.vault, "VaultUnsupportedToken")
        .withArgs(await other.getAddress());
      await expect(this.vault.balanceOf(this.alice.address, await other.getAddress()))
        .to.be.revertedWithCustomError(this.vault, "VaultUnsupportedToken")
        .withArgs(await other.getAddress());
    });

    it("reverts with the token's ERC20InsufficientAllowance without approval", async function () {
      await this.bpc.connect(this.alice).approve(await this.vault.getAddress(), 0n);
      await expect(this.vault.connect(this.alice).deposit(this.bpcAddress, 1n))
        .to.be.revertedWithCustomError(this.bpc, "ERC20InsufficientAllowance")
        .withArgs(await this.vault.getAddress(), 0n, 1n);
    });

    it("reverts with SafeCast's overflow error above a 104-bit balance", async function () {
      const max = 2n ** 104n - 1n;
      await this.quote.mint(this.alice.address, max);
      await expect(this.vault.connect(this.alice).deposit(this.quoteAddress, max))
        .to.be.revertedWithCustomError(this.vault, "SafeCastOverflowedUintDowncast")
        .withArgs(104, DEPOSIT_QUOTE + max);
    });
  });

  describe("withdraw with the operator's authorisation", function () {
    it("pays the caller at once and uses up the nonce", async function () {
      const { tx } = await this.withdraw(this.alice, { token: this.bpcAddress, amount: bpc(3), nonce: 7n });
      await expect(tx).to.emit(this.vault, "Withdrawn").withArgs(this.alice.address, this.bpcAddress, bpc(3), 7n);
      await expect(tx).to.changeTokenBalances(this.bpc, [this.vault, this.alice], [-bpc(3), bpc(3)]);
      expect(await this.vault.balanceOf(this.alice.address, this.bpcAddress)).to.equal(DEPOSIT_BPC - bpc(3));
      expect(await this.vault.isWithdrawalNonceUsed(this.alice.address, 7n)).to.equal(true);
      expect(await this.vault.isWithdrawalNonceUsed(this.alice.address, 8n)).to.equal(false);
      expect(await this.vault.isWithdrawalNonceUsed(this.bob.address, 7n)).to.equal(false);
    });

    it("reverts VaultWithdrawalNonceUsed on replay, even for another amount", async function () {
      await (await this.withdraw(this.alice, { token: this.bpcAddress, amount: 1n, nonce: 300n })).tx;
      const { tx } = await this.withdraw(this.alice, { token: this.quoteAddress, amount: 2n, nonce: 300n });
      await expect(tx).to.be.revertedWithCustomError(this.vault, "VaultWithdrawalNonceUsed").withArgs(this.alice.address, 300n);
    });

    it("accepts nonces in any order", async function () {
      for (const nonce of [2n ** 64n - 1n, 0n, 255n, 256n]) {
        await expect((await this.withdraw(this.alice, { token: this.bpcAddress, amount: 1n, nonce })).tx).to.emit(
          this.vault,
          "Withdrawn",
        );
      }
    });

    it("reverts VaultWithdrawalExpired once the block time reaches the expiry", async function () {
      const expiry = BigInt(await time.latest()) + 10n;
      const auth = await authoriseWithdrawal(this.vault, this.operator, {
        account: this.alice.address,
        token: this.bpcAddress,
        amount: 1n,
        nonce: 1n,
        expiry,
      });
      await time.setNextBlockTimestamp(expiry);
      await expect(this.vault.connect(this.alice).withdraw(auth.token, auth.amount, auth.nonce, expiry, auth.signature))
        .to.be.revertedWithCustomError(this.vault, "VaultWithdrawalExpired")
        .withArgs(expiry);
    });

    it("reverts VaultInvalidOperatorSignature when a non-operator signed", async function () {
      // The digest first: a transaction left pending across an await rejects unobserved.
      const auth = await authoriseWithdrawal(this.vault, this.alice, {
        account: this.alice.address,
        token: this.bpcAddress,
        amount: 1n,
        nonce: 1n,
      });
      const digest = await this.vault.hashWithdrawal(this.alice.address, auth.token, auth.amount, auth.nonce, auth.expiry);
      await expect(this.vault.connect(this.alice).withdraw(auth.token, auth.amount, auth.nonce, auth.expiry, auth.signature))
        .to.be.revertedWithCustomError(this.vault, "VaultInvalidOperatorSignature")
        .withArgs(digest, this.alice.address);
    });

    it("reverts VaultInvalidOperatorSignature for an authorisation of another account", async function () {
      const auth = await authoriseWithdrawal(this.vault, this.operator, {
        account: this.alice.address,
        token: this.bpcAddress,
        amount: 1n,
        nonce: 1n,
      });
      await expect(this.vault.connect(this.bob).withdraw(auth.token, auth.amount, auth.nonce, auth.expiry, auth.signature))
        .to.be.revertedWithCustomError(this.vault, "VaultInvalidOperatorSignature")
        .withArgs(await this.vault.hashWithdrawal(this.bob.address, auth.token, 1n, 1n, auth.expiry), anyValue);
    });

    it("reverts VaultInvalidOperatorSignature with a zero signer for a malformed signature", async function () {
      const auth = await authoriseWithdrawal(this.vault, this.operator, {
        account: this.alice.address,
        token: this.bpcAddress,
        amount: 1n,
        nonce: 1n,
      });
      const digest = await this.vault.hashWithdrawal(this.alice.address, auth.token, 1n, 1n, auth.expiry);
      await expect(this.vault.connect(this.alice).withdraw(auth.token, 1n, 1n, auth.expiry, auth.signature.slice(0, -2)))
        .to.be.revertedWithCustomError(this.vault, "VaultInvalidOperatorSignature")
        .withArgs(digest, ethers.ZeroAddress);
    });

    it("reverts VaultInvalidOperatorSignature after the operator lost its role", async function () {
      await this.vault.connect(this.council).revokeRole(await this.vault.OPERATOR_ROLE(), this.operator.address);
      const { auth, tx } = await this.withdraw(this.alice, { token: this.bpcAddress, amount: 1n, nonce: 1n });
      await expect(tx)
        .to.be.revertedWithCustomError(this.vault, "VaultInvalidOperatorSignature")
        .withArgs(await this.vault.hashWithdrawal(this.alice.address, auth.token, 1n, 1n, auth.expiry), this.operator.address);
    });

    it("reverts VaultInsufficientBalance above the balance", async function () {
      const { tx } = await this.withdraw(this.alice, { token: this.quoteAddress, amount: DEPOSIT_QUOTE + 1n, nonce: 1n });
      await expect(tx)
        .to.be.revertedWithCustomError(this.vault, "VaultInsufficientBalance")
        .withArgs(this.alice.address, this.quoteAddress, DEPOSIT_QUOTE, DEPOSIT_QUOTE + 1n);
    });

    it("reverts VaultZeroAmount and VaultUnsupportedToken", async function () {
      await expect((await this.withdraw(this.alice, { token: this.bpcAddress, amount: 0n, nonce: 1n })).tx).to.be.revertedWithCustomError(
        this.vault,
        "VaultZeroAmount",
      );
      const other = ethers.Wallet.createRandom().address;
      await expect((await this.withdraw(this.alice, { token: other, amount: 1n, nonce: 1n })).tx)
        .to.be.revertedWithCustomError(this.vault, "VaultUnsupportedToken")
        .withArgs(other);
    });

    it("hashes the authorisation as EIP-712 typed data in the Vault's domain", async function () {
      const value = { account: this.alice.address, token: this.bpcAddress, amount: 5n, nonce: 9n, expiry: 1234n };
      expect(await this.vault.hashWithdrawal(...Object.values(value))).to.equal(
        ethers.TypedDataEncoder.hash(await domainOf(this.vault), WITHDRAWAL_TYPES, value),
      );
    });
  });

  describe("a hostile token re-entering", function () {
    beforeEach(async function () {
      Object.assign(this, await loadFixture(deployHostileVault));
      this.hostileAddress = await this.hostile.getAddress();
      this.vaultAddress = await this.hostileVault.getAddress();
      this.reentryError = this.hostileVault.interface.getError("ReentrancyGuardReentrantCall").selector;
    });

    it("cannot re-enter deposit from deposit: the guard reverts the inner call", async function () {
      const inner = this.hostileVault.interface.encodeFunctionData("deposit", [this.hostileAddress, 100n]);
      await this.hostile.arm(this.vaultAddress, inner, true);
      await expect(this.hostileVault.connect(this.mallory).deposit(this.hostileAddress, 100n)).to.be.revertedWithCustomError(
        this.hostileVault,
        "ReentrancyGuardReentrantCall",
      );
      expect(await this.hostile.reentrySuccesses()).to.equal(0n);
    });

    it("credits exactly what arrived when the token swallows the failed re-entry", async function () {
      const inner = this.hostileVault.interface.encodeFunctionData("deposit", [this.hostileAddress, 100n]);
      await this.hostile.arm(this.vaultAddress, inner, false);
      await this.hostileVault.connect(this.mallory).deposit(this.hostileAddress, 100n);
      expect(await this.hostile.reentryAttempts()).to.equal(1n);
      expect(await this.hostile.reentrySuccesses()).to.equal(0n);
      expect(await this.hostile.lastReentryError()).to.equal(this.reentryError);
      expect(await this.hostileVault.balanceOf(this.mallory.address, this.hostileAddress)).to.equal(100n);
      expect(await this.hostile.balanceOf(this.vaultAddress)).to.equal(100n);
    });

    it("cannot re-enter withdraw from withdraw or exit", async function () {
      await this.hostileVault.connect(this.mallory).deposit(this.hostileAddress, 100n);
      const auth = await authoriseWithdrawal(this.hostileVault, this.operator, {
        account: this.mallory.address,
        token: this.hostileAddress,
        amount: 40n,
        nonce: 1n,
      });
      const args = [auth.token, auth.amount, auth.nonce, auth.expiry, auth.signature];
      await this.hostile.arm(this.vaultAddress, this.hostileVault.interface.encodeFunctionData("withdraw", args), true);
      await expect(this.hostileVault.connect(this.mallory).withdraw(...args)).to.be.revertedWithCustomError(
        this.hostileVault,
        "ReentrancyGuardReentrantCall",
      );

      await this.hostileVault.connect(this.council).setExitDelay(0n);
      await this.hostileVault.connect(this.mallory).requestExit();
      await this.hostile.arm(this.vaultAddress, this.hostileVault.interface.encodeFunctionData("exit"), false);
      await this.hostileVault.connect(this.mallory).exit();
      expect(await this.hostile.lastReentryError()).to.equal(this.reentryError);
      expect(await this.hostile.balanceOf(this.mallory.address)).to.equal(1_000n);
      expect(await this.hostile.balanceOf(this.vaultAddress)).to.equal(0n);
      expect(await this.hostileVault.balanceOf(this.mallory.address, this.hostileAddress)).to.equal(0n);
    });
  });
});
