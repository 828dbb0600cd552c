// BPC: OpenZeppelin's ERC-20 behaviour suite, plus the minter role, burning
// and EIP-2612 permits.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { PANIC_CODES } = require("@nomicfoundation/hardhat-chai-matchers/panic");
const { deployPool } = require("../scripts/lib/deploy-pool");
const { shouldBehaveLikeERC20 } = require("./behaviours/ERC20.behavior");

const NAME = "Blockchain Patent Collection";
const SYMBOL = "BPC";
const INITIAL_SUPPLY = ethers.parseUnits("100", 18);

const PERMIT_TYPES = {
  Permit: [
    { name: "owner", type: "address" },
    { name: "spender", type: "address" },
    { name: "value", type: "uint256" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
};

// The pool as deployed in production, without tier references, so that the
// whole BPC supply sits with `initialHolder` as the ERC-20 suite expects.
async function deployBpcWithHolder() {
  const [council, registrar, minter, initialHolder, recipient, anotherAccount, spender] = await ethers.getSigners();
  const pool = await deployPool(ethers, { council, registrar, minter });
  await pool.bpc.connect(minter).mint(initialHolder.address, INITIAL_SUPPLY);
  return { token: pool.bpc, council, minter, initialHolder, recipient, anotherAccount, spender };
}

async function signPermit(token, owner, spender, value, deadline, { nonce, signer = owner } = {}) {
  const domain = {
    name: NAME,
    version: "1",
    chainId: (await ethers.provider.getNetwork()).chainId,
    verifyingContract: await token.getAddress(),
  };
  const message = {
    owner: owner.address,
    spender: spender.address,
    value,
    nonce: nonce ?? (await token.nonces(owner.address)),
    deadline,
  };
  const signature = ethers.Signature.from(await signer.signTypedData(domain, PERMIT_TYPES, message));
  return { domain, message, signature };
}

describe("BPC", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployBpcWithHolder));
  });

  describe("OpenZeppelin ERC-20 behaviour", function () {
    shouldBehaveLikeERC20(INITIAL_SUPPLY);
  });

  describe("metadata", function () {
    it("has the pool's name, symbol and 18 decimals", async function () {
      expect(await this.token.name()).to.equal(NAME);
      expect(await this.token.symbol()).to.equal(SYMBOL);
      expect(await this.token.decimals()).to.equal(18n);
    });

    it("supports IAccessControl and IERC165 and nothing unrelated", async function () {
      expect(await this.token.supportsInterface("0x7965db0b")).to.equal(true);
      expect(await this.token.supportsInterface("0x01ffc9a7")).to.equal(true);
      expect(await this.token.supportsInterface("0xffffffff")).to.equal(false);
    });
  });

  describe("mint", function () {
    it("lets the minter create BPC for any account", async function () {
      const value = ethers.parseUnits("5", 18);
      const tx = this.token.connect(this.minter).mint(this.recipient.address, value);
      await expect(tx).to.emit(this.token, "Transfer").withArgs(ethers.ZeroAddress, this.recipient.address, value);
      await expect(tx).to.changeTokenBalance(this.token, this.recipient, value);
      expect(await this.token.totalSupply()).to.equal(INITIAL_SUPPLY + value);
    });

    it("reverts for accounts without MINTER_ROLE, the council included", async function () {
      const minterRole = await this.token.MINTER_ROLE();
      for (const account of [this.council, this.initialHolder]) {
        await expect(this.token.connect(account).mint(account.address, 1n))
          .to.be.revertedWithCustomError(this.token, "AccessControlUnauthorizedAccount")
          .withArgs(account.address, minterRole);
      }
    });

    it("stops working for a minter whose role the council revoked", async function () {
      const minterRole = await this.token.MINTER_ROLE();
      await this.token.connect(this.council).revokeRole(minterRole, this.minter.address);
      await expect(this.token.connect(this.minter).mint(this.recipient.address, 1n))
        .to.be.revertedWithCustomError(this.token, "AccessControlUnauthorizedAccount")
        .withArgs(this.minter.address, minterRole);
    });

    it("reverts when minting to the zero address", async function () {
      await expect(this.token.connect(this.minter).mint(ethers.ZeroAddress, 1n))
        .to.be.revertedWithCustomError(this.token, "ERC20InvalidReceiver")
        .withArgs(ethers.ZeroAddress);
    });

    it("reverts on total supply overflow", async function () {
      await expect(
        this.token.connect(this.minter).mint(this.recipient.address, ethers.MaxUint256),
      ).to.be.revertedWithPanic(PANIC_CODES.ARITHMETIC_OVERFLOW);
    });
  });

  describe("mintOnce", function () {
    const KEY = ethers.id("bpc-mint\x1fUS11000001B2\x1f1");

    it("mints once under a key, records it and says so", async function () {
      const value = ethers.parseUnits("750", 18);
      expect(await this.token.mintKeys(KEY)).to.equal(false);
      const tx = this.token.connect(this.minter).mintOnce(this.recipient.address, value, KEY);
      await expect(tx).to.emit(this.token, "MintedOnce").withArgs(this.recipient.address, value, KEY);
      await expect(tx).to.emit(this.token, "Transfer").withArgs(ethers.ZeroAddress, this.recipient.address, value);
      await expect(tx).to.changeTokenBalance(this.token, this.recipient, value);
      expect(await this.token.mintKeys(KEY)).to.equal(true);
      expect(await this.token.totalSupply()).to.equal(INITIAL_SUPPLY + value);
    });

    it("refuses a key used before, whatever the recipient or amount", async function () {
      await this.token.connect(this.minter).mintOnce(this.recipient.address, 5n, KEY);
      for (const [to, value] of [
        [this.recipient.address, 5n],
        [this.initialHolder.address, 7n],
      ]) {
        await expect(this.token.connect(this.minter).mintOnce(to, value, KEY))
          .to.be.revertedWithCustomError(this.token, "BPCMintKeyUsed")
          .withArgs(KEY);
      }
      expect(await this.token.totalSupply()).to.equal(INITIAL_SUPPLY + 5n);
    });

    it("keeps keys apart: another key mints again", async function () {
      await this.token.connect(this.minter).mintOnce(this.recipient.address, 5n, KEY);
      await this.token.connect(this.minter).mintOnce(this.recipient.address, 5n, ethers.id("another"));
      expect(await this.token.balanceOf(this.recipient.address)).to.equal(10n);
    });

    it("refuses the zero key", async function () {
      await expect(
        this.token.connect(this.minter).mintOnce(this.recipient.address, 1n, ethers.ZeroHash),
      ).to.be.revertedWithCustomError(this.token, "BPCZeroMintKey");
    });

    it("reverts for accounts without MINTER_ROLE and leaves the key unused", async function () {
      const minterRole = await this.token.MINTER_ROLE();
      for (const account of [this.council, this.initialHolder]) {
        await expect(this.token.connect(account).mintOnce(account.address, 1n, KEY))
          .to.be.revertedWithCustomError(this.token, "AccessControlUnauthorizedAccount")
          .withArgs(account.address, minterRole);
      }
      expect(await this.token.mintKeys(KEY)).to.equal(false);
    });

    it("leaves the key unused when the mint itself reverts", async function () {
      await expect(
        this.token.connect(this.minter).mintOnce(ethers.ZeroAddress, 1n, KEY),
      ).to.be.revertedWithCustomError(this.token, "ERC20InvalidReceiver");
      expect(await this.token.mintKeys(KEY)).to.equal(false);
    });
  });

  describe("burn", function () {
    it("lets a holder burn its own BPC", async function () {
      const value = ethers.parseUnits("30", 18);
      const tx = this.token.connect(this.initialHolder).burn(value);
      await expect(tx).to.emit(this.token, "Transfer").withArgs(this.initialHolder.address, ethers.ZeroAddress, value);
      await expect(tx).to.changeTokenBalance(this.token, this.initialHolder, -value);
      expect(await this.token.totalSupply()).to.equal(INITIAL_SUPPLY - value);
    });

    it("reverts when burning more than the balance", async function () {
      await expect(this.token.connect(this.initialHolder).burn(INITIAL_SUPPLY + 1n))
        .to.be.revertedWithCustomError(this.token, "ERC20InsufficientBalance")
        .withArgs(this.initialHolder.address, INITIAL_SUPPLY, INITIAL_SUPPLY + 1n);
    });

    it("burnFrom spends the allowance", async function () {
      const value = ethers.parseUnits("10", 18);
      await this.token.connect(this.initialHolder).approve(this.spender.address, value * 2n);
      await expect(this.token.connect(this.spender).burnFrom(this.initialHolder.address, value)).to.changeTokenBalance(
        this.token,
        this.initialHolder,
        -value,
      );
      expect(await this.token.allowance(this.initialHolder.address, this.spender.address)).to.equal(value);
      expect(await this.token.totalSupply()).to.equal(INITIAL_SUPPLY - value);
    });

    it("burnFrom reverts beyond the allowance", async function () {
      const allowance = ethers.parseUnits("10", 18);
      await this.token.connect(this.initialHolder).approve(this.spender.address, allowance);
      await expect(this.token.connect(this.spender).burnFrom(this.initialHolder.address, allowance + 1n))
        .to.be.revertedWithCustomError(this.token, "ERC20InsufficientAllowance")
        .withArgs(this.spender.address, allowance, allowance + 1n);
    });

    it("burnFrom leaves an unlimited allowance untouched", async function () {
      await this.token.connect(this.initialHolder).approve(this.spender.address, ethers.MaxUint256);
      await this.token.connect(this.spender).burnFrom(this.initialHolder.address, 1n);
      expect(await this.token.allowance(this.initialHolder.address, this.spender.address)).to.equal(ethers.MaxUint256);
    });
  });

  describe("permit (EIP-2612)", function () {
    const value = ethers.parseUnits("42", 18);

    beforeEach(async function () {
      this.deadline = BigInt(await time.latest()) + 3600n;
    });

    it("exposes the EIP-712 domain the signatures are bound to", async function () {
      const { domain } = await signPermit(this.token, this.initialHolder, this.spender, value, this.deadline);
      expect(await this.token.DOMAIN_SEPARATOR()).to.equal(ethers.TypedDataEncoder.hashDomain(domain));
      const onChain = await this.token.eip712Domain();
      expect(onChain.name).to.equal(NAME);
      expect(onChain.version).to.equal("1");
      expect(onChain.chainId).to.equal(domain.chainId);
      expect(onChain.verifyingContract).to.equal(domain.verifyingContract);
    });

    it("sets the allowance from a valid signature sent by anyone, and uses the nonce", async function () {
      const { signature } = await signPermit(this.token, this.initialHolder, this.spender, value, this.deadline);
      await expect(
        this.token
          .connect(this.anotherAccount)
          .permit(
            this.initialHolder.address,
            this.spender.address,
            value,
            this.deadline,
            signature.v,
            signature.r,
            signature.s,
          ),
      )
        .to.emit(this.token, "Approval")
        .withArgs(this.initialHolder.address, this.spender.address, value);
      expect(await this.token.allowance(this.initialHolder.address, this.spender.address)).to.equal(value);
      expect(await this.token.nonces(this.initialHolder.address)).to.equal(1n);
      await this.token.connect(this.spender).transferFrom(this.initialHolder.address, this.recipient.address, value);
      expect(await this.token.balanceOf(this.recipient.address)).to.equal(value);
    });

    it("reverts with ERC2612ExpiredSignature after the deadline", async function () {
      const deadline = BigInt(await time.latest()) - 1n;
      const { signature } = await signPermit(this.token, this.initialHolder, this.spender, value, deadline);
      await expect(
        this.token.permit(
          this.initialHolder.address,
          this.spender.address,
          value,
          deadline,
          signature.v,
          signature.r,
          signature.s,
        ),
      )
        .to.be.revertedWithCustomError(this.token, "ERC2612ExpiredSignature")
        .withArgs(deadline);
    });

    it("reverts with ERC2612InvalidSigner when another key signed", async function () {
      const { signature } = await signPermit(this.token, this.initialHolder, this.spender, value, this.deadline, {
        signer: this.anotherAccount,
      });
      await expect(
        this.token.permit(
          this.initialHolder.address,
          this.spender.address,
          value,
          this.deadline,
          signature.v,
          signature.r,
          signature.s,
        ),
      )
        .to.be.revertedWithCustomError(this.token, "ERC2612InvalidSigner")
        .withArgs(this.anotherAccount.address, this.initialHolder.address);
    });

    it("reverts with ERC2612InvalidSigner when the signed value differs from the submitted one", async function () {
      const { domain, message, signature } = await signPermit(
        this.token,
        this.initialHolder,
        this.spender,
        value,
        this.deadline,
      );
      const recovered = ethers.verifyTypedData(domain, PERMIT_TYPES, { ...message, value: value + 1n }, signature);
      await expect(
        this.token.permit(
          this.initialHolder.address,
          this.spender.address,
          value + 1n,
          this.deadline,
          signature.v,
          signature.r,
          signature.s,
        ),
      )
        .to.be.revertedWithCustomError(this.token, "ERC2612InvalidSigner")
        .withArgs(recovered, this.initialHolder.address);
    });

    it("rejects a replayed signature: the nonce has moved on", async function () {
      const { domain, message, signature } = await signPermit(
        this.token,
        this.initialHolder,
        this.spender,
        value,
        this.deadline,
      );
      const args = [
        this.initialHolder.address,
        this.spender.address,
        value,
        this.deadline,
        signature.v,
        signature.r,
        signature.s,
      ];
      await this.token.permit(...args);
      // The contract now hashes nonce 1, so the signature recovers to some other address.
      const recovered = ethers.verifyTypedData(domain, PERMIT_TYPES, { ...message, nonce: 1n }, signature);
      expect(recovered).to.not.equal(this.initialHolder.address);
      await expect(this.token.permit(...args))
        .to.be.revertedWithCustomError(this.token, "ERC2612InvalidSigner")
        .withArgs(recovered, this.initialHolder.address);
    });
  });
});
