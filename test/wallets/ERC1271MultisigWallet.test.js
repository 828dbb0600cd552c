// ERC1271MultisigWallet: a signature is every owner's 65 bytes of the hash, in ascending order
// of owner address; any owner makes the wallet act.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");

const MAGIC = "0x1626ba7e";
const REFUSED = "0xffffffff";

async function deployWallet() {
  const [first, second, stranger] = await ethers.getSigners();
  const owners = [first, second].sort((a, b) => (BigInt(a.address) < BigInt(b.address) ? -1 : 1));
  const factory = await ethers.getContractFactory("ERC1271MultisigWallet");
  const wallet = await factory.deploy(owners.map((owner) => owner.address));
  const hash = ethers.hashMessage("an order");
  const signatures = await Promise.all(owners.map((owner) => owner.signMessage("an order")));
  return { factory, owners, stranger, wallet, hash, signatures };
}

describe("ERC1271MultisigWallet", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployWallet));
  });

  it("accepts every owner's signature, concatenated in the owners' order", async function () {
    expect(await this.wallet.isValidSignature(this.hash, ethers.concat(this.signatures))).to.equal(MAGIC);
  });

  it("refuses one signature short, the owners out of order, or a stranger's in place of an owner's", async function () {
    const [low, high] = this.signatures;
    const strangers = await this.stranger.signMessage("an order");
    for (const signature of [low, ethers.concat([high, low]), ethers.concat([low, strangers]), "0x"]) {
      expect(await this.wallet.isValidSignature(this.hash, signature)).to.equal(REFUSED);
    }
  });

  it("reverts ERC1271MultisigWalletBadOwners for no owners or owners out of order", async function () {
    const [low, high] = this.owners.map((owner) => owner.address);
    await expect(this.factory.deploy([])).to.be.revertedWithCustomError(this.factory, "ERC1271MultisigWalletBadOwners");
    await expect(this.factory.deploy([high, low])).to.be.revertedWithCustomError(
      this.factory,
      "ERC1271MultisigWalletBadOwners",
    );
  });

  it("lets only an owner act", async function () {
    await expect(this.wallet.connect(this.stranger).execute(this.stranger.address, "0x"))
      .to.be.revertedWithCustomError(this.wallet, "ERC1271MultisigWalletUnauthorized")
      .withArgs(this.stranger.address);
    const target = await this.wallet.getAddress(); // any contract: the wallet reads its own owners(0)
    const call = this.wallet.interface.encodeFunctionData("owners", [0n]);
    await this.wallet.connect(this.owners[1]).execute(target, call);
  });
});
