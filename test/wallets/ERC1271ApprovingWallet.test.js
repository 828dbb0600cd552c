// ERC1271ApprovingWallet: the owner's signature of a hash holds only while the owner approves
// the hash; only the owner approves, withdraws and makes the wallet act.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");

const MAGIC = "0x1626ba7e";
const REFUSED = "0xffffffff";

async function deployWallet() {
  const [owner, stranger] = await ethers.getSigners();
  const wallet = await (await ethers.getContractFactory("ERC1271ApprovingWallet")).deploy(owner.address);
  const message = "holds a licence";
  const hash = ethers.hashMessage(message);
  return { owner, stranger, wallet, hash, signature: await owner.signMessage(message) };
}

describe("ERC1271ApprovingWallet", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployWallet));
  });

  it("accepts the owner's signature only while the hash is approved", async function () {
    expect(await this.wallet.isValidSignature(this.hash, this.signature)).to.equal(REFUSED);
    await expect(this.wallet.setApproval(this.hash, true)).to.emit(this.wallet, "HashApproval").withArgs(this.hash, true);
    expect(await this.wallet.isValidSignature(this.hash, this.signature)).to.equal(MAGIC);
    await expect(this.wallet.setApproval(this.hash, false)).to.emit(this.wallet, "HashApproval").withArgs(this.hash, false);
    expect(await this.wallet.isValidSignature(this.hash, this.signature)).to.equal(REFUSED);
  });

  it("refuses another key's signature of an approved hash, and bytes that are no signature", async function () {
    await this.wallet.setApproval(this.hash, true);
    const other = await this.stranger.signMessage("holds a licence");
    expect(await this.wallet.isValidSignature(this.hash, other)).to.equal(REFUSED);
    expect(await this.wallet.isValidSignature(this.hash, "0x1234")).to.equal(REFUSED);
  });

  it("lets only the owner approve and act", async function () {
    await expect(this.wallet.connect(this.stranger).setApproval(this.hash, true))
      .to.be.revertedWithCustomError(this.wallet, "ERC1271ApprovingWalletUnauthorized")
      .withArgs(this.stranger.address);
    await expect(this.wallet.connect(this.stranger).execute(this.stranger.address, "0x"))
      .to.be.revertedWithCustomError(this.wallet, "ERC1271ApprovingWalletUnauthorized")
      .withArgs(this.stranger.address);
  });
});
