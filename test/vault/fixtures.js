// Fixtures of the Vault tests. The pool is deployed and wired by
// scripts/lib/deploy-pool.js (as in production); then a 6-decimal test quote
// token and the Vault, whose OPERATOR_ROLE goes to `operator`. Four active
// members (alice, bob, carol, dave) and a non-member (outsider) hold BPC and
// quote tokens, have approved the Vault and deposited DEPOSIT_BPC / DEPOSIT_QUOTE.
//
//   const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
//   const ctx = await loadFixture(deployVaultWithTraders);
const { ethers } = require("hardhat");
const { deployPool } = require("../../scripts/lib/deploy-pool");
const { Tier } = require("../../scripts/lib/pool-enums");

/** Seconds between an exit request and the exit. */
const EXIT_DELAY = 3 * 24 * 60 * 60;
/** Whole BPC to base units (18 decimals). */
const bpc = (whole) => ethers.parseUnits(String(whole), 18);
/** Whole quote tokens to base units (6 decimals). */
const usd = (whole) => ethers.parseUnits(String(whole), 6);

const WALLET_BPC = bpc(1_000_000);
const WALLET_QUOTE = usd(10_000_000);
const DEPOSIT_BPC = bpc(10_000);
const DEPOSIT_QUOTE = usd(1_000_000);

async function deployVaultContract(pool, quote, council, exitDelay = EXIT_DELAY) {
  const factory = await ethers.getContractFactory("Vault");
  const vault = await factory.deploy(
    council.address,
    await pool.bpc.getAddress(),
    await quote.getAddress(),
    await pool.registry.getAddress(),
    await pool.fund.getAddress(),
    exitDelay,
  );
  await vault.waitForDeployment();
  return vault;
}

/**
 * The pool, a quote token and the Vault; no members yet.
 * Signers: council, registrar, minter, operator, and `users` (the rest).
 */
async function deployVault() {
  const [council, registrar, minter, operator, ...users] = await ethers.getSigners();
  const pool = await deployPool(ethers, { council, registrar, minter });
  const quote = await (await ethers.getContractFactory("TestToken")).deploy("Test USD", "TUSD", 6);
  const vault = await deployVaultContract(pool, quote, council);
  await (await vault.connect(council).grantRole(await vault.OPERATOR_ROLE(), operator.address)).wait();
  return { ...pool, quote, vault, council, registrar, minter, operator, users };
}

/** Give `account` wallet balances of both tokens and approve the Vault for them. */
async function fund(ctx, account) {
  const vaultAddress = await ctx.vault.getAddress();
  await ctx.bpc.connect(ctx.minter).mint(account.address, WALLET_BPC);
  await ctx.quote.mint(account.address, WALLET_QUOTE);
  await ctx.bpc.connect(account).approve(vaultAddress, ethers.MaxUint256);
  await ctx.quote.connect(account).approve(vaultAddress, ethers.MaxUint256);
}

/** Fund, approve and deposit DEPOSIT_BPC and DEPOSIT_QUOTE for each account. */
async function fundAndDeposit(ctx, accounts) {
  for (const account of accounts) {
    await fund(ctx, account);
    await ctx.vault.connect(account).deposit(await ctx.bpc.getAddress(), DEPOSIT_BPC);
    await ctx.vault.connect(account).deposit(await ctx.quote.getAddress(), DEPOSIT_QUOTE);
  }
}

/**
 * deployVault plus members alice, bob, carol, dave (active) and a non-member
 * `outsider`, all funded and with deposits; `users` are the accounts left.
 */
async function deployVaultWithTraders() {
  const ctx = await deployVault();
  const [alice, bob, carol, dave, outsider, ...users] = ctx.users;
  const tiers = [Tier.Small, Tier.Medium, Tier.Large, Tier.NonProfit];
  for (const [index, member] of [alice, bob, carol, dave].entries()) {
    await ctx.registry.connect(ctx.registrar).admit(member.address, tiers[index]);
  }
  const out = { ...ctx, alice, bob, carol, dave, outsider, users };
  await fundAndDeposit(out, [alice, bob, carol, dave, outsider]);
  return out;
}

/**
 * A contract wallet of kind `contractName` (contracts/test) owned by `walletOwner` (its
 * constructor's further arguments `args`), admitted and holding a deposit of 100 BPC and 1,000
 * quote tokens, made through the wallet itself.
 */
async function addWalletMember(ctx, contractName, walletOwner, ...args) {
  const wallet = await (await ethers.getContractFactory(contractName)).deploy(walletOwner.address, ...args);
  const walletAddress = await wallet.getAddress();
  const vaultAddress = await ctx.vault.getAddress();
  await ctx.registry.connect(ctx.registrar).admit(walletAddress, Tier.Medium);
  await ctx.bpc.connect(ctx.minter).mint(walletAddress, bpc(100));
  await ctx.quote.mint(walletAddress, usd(1000));
  for (const [token, amount] of [
    [ctx.bpc, bpc(100)],
    [ctx.quote, usd(1000)],
  ]) {
    const tokenAddress = await token.getAddress();
    await wallet.connect(walletOwner).execute(tokenAddress, token.interface.encodeFunctionData("approve", [vaultAddress, amount]));
    await wallet.connect(walletOwner).execute(vaultAddress, ctx.vault.interface.encodeFunctionData("deposit", [tokenAddress, amount]));
  }
  return { wallet, walletAddress };
}

module.exports = {
  addWalletMember,
  EXIT_DELAY,
  WALLET_BPC,
  WALLET_QUOTE,
  DEPOSIT_BPC,
  DEPOSIT_QUOTE,
  bpc,
  usd,
  deployVault,
  deployVaultContract,
  deployVaultWithTraders,
  fund,
  fundAndDeposit,
};
