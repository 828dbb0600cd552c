// EIP-712 orders and withdrawal authorisations for the Vault tests, and the
// test's own copy of the settlement arithmetic (contracts/libraries/LibOrder.sol
// defines it; exchange/trading/amounts.py mirrors it for the service).
const { ethers } = require("hardhat");

const Side = Object.freeze({ Buy: 0, Sell: 1 });
/** IVault.SkipReason: how a maker withdrew an order whose fills `settle` skipped. */
const SkipReason = Object.freeze({
  None: 0,
  OrderCancelled: 1,
  OrderNonceCancelled: 2,
  AccountExiting: 3,
  WalletRefused: 4,
});
const PRICE_SCALE = 10n ** 18n;
const BPS = 10_000n;

const ORDER_TYPES = Object.freeze({
  Order: [
    { name: "maker", type: "address" },
    { name: "baseToken", type: "address" },
    { name: "quoteToken", type: "address" },
    { name: "side", type: "uint8" },
    { name: "price", type: "uint256" },
    { name: "amount", type: "uint256" },
    { name: "maxFeeBps", type: "uint16" },
    { name: "nonce", type: "uint64" },
    { name: "expiry", type: "uint64" },
  ],
});

const WITHDRAWAL_TYPES = Object.freeze({
  Withdrawal: [
    { name: "account", type: "address" },
    { name: "token", type: "address" },
    { name: "amount", type: "uint256" },
    { name: "nonce", type: "uint64" },
    { name: "expiry", type: "uint64" },
  ],
});

/** Far enough ahead that no test's clock reaches it. */
const FAR_EXPIRY = BigInt(Math.floor(Date.now() / 1000)) + 20n * 365n * 86_400n;

let nextNonce = 1n;

/** The Vault's EIP-712 domain; `overrides` forge another chain or contract. */
async function domainOf(vault, overrides = {}) {
  const { chainId } = await ethers.provider.getNetwork();
  return {
    name: "BPC Vault",
    version: "1",
    chainId,
    verifyingContract: await vault.getAddress(),
    ...overrides,
  };
}

/**
 * An order of `maker` (a Signer, or a contract wallet address with `signer` its owner)
 * in the Vault's market; every field can be overridden. Nonces are unique per test run.
 */
async function newOrder(ctx, maker, fields = {}) {
  return {
    maker: typeof maker === "string" ? maker : maker.address,
    baseToken: await ctx.bpc.getAddress(),
    quoteToken: await ctx.quote.getAddress(),
    side: Side.Sell,
    price: 2_000_000n,
    amount: 10n ** 18n,
    maxFeeBps: 30n,
    nonce: nextNonce++,
    expiry: FAR_EXPIRY,
    ...fields,
  };
}

/** `signer`'s EIP-712 signature of `order` in `domain`. */
function signOrder(signer, domain, order) {
  return signer.signTypedData(domain, ORDER_TYPES, order);
}

/** The order's EIP-712 digest, computed off chain. */
function orderHash(domain, order) {
  return ethers.TypedDataEncoder.hash(domain, ORDER_TYPES, order);
}

/**
 * Sign every entry of `entries` ({order, signer}) in the Vault's domain.
 * Returns the settle() arguments `orders` and `signatures`, and the hashes.
 */
async function signAll(vault, entries) {
  const domain = await domainOf(vault);
  const orders = entries.map((entry) => entry.order);
  const signatures = await Promise.all(entries.map((entry) => signOrder(entry.signer, domain, entry.order)));
  return { orders, signatures, hashes: orders.map((order) => orderHash(domain, order)) };
}

/**
 * Sign `entries` ({order, signer}) and settle them with `fills` as `operator`.
 * Returns the transaction, its receipt and the order hashes.
 */
async function settleSigned(vault, operator, entries, fills) {
  const { orders, signatures, hashes } = await signAll(vault, entries);
  const tx = await vault.connect(operator).settle(orders, signatures, fills);
  return { tx, receipt: await tx.wait(), hashes };
}

/** The events named `name` that `vault` emitted in `receipt`, parsed. */
function vaultEvents(vault, receipt, name) {
  return receipt.logs
    .map((log) => vault.interface.parseLog(log))
    .filter((parsed) => parsed !== null && parsed.name === name);
}

/** A fill of `baseAmount` at `price` between orders at `makerIndex` and `takerIndex`. */
function newFill(makerIndex, takerIndex, baseAmount, price, makerFeeBps = 10n, takerFeeBps = 20n) {
  return { makerIndex, takerIndex, makerFeeBps, takerFeeBps, baseAmount, price };
}

/** The operator's signature of a withdrawal authorisation, and its fields. */
async function authoriseWithdrawal(vault, operator, { account, token, amount, nonce, expiry = FAR_EXPIRY }) {
  const value = { account, token, amount, nonce, expiry };
  const signature = await operator.signTypedData(await domainOf(vault), WITHDRAWAL_TYPES, value);
  return { ...value, signature };
}

// ---- the settlement arithmetic, restated independently with BigInt

function quoteAmount(baseAmount, price) {
  return (baseAmount * price) / PRICE_SCALE;
}

function fee(quote, feeBps, maxFeeBps) {
  const scheduled = (quote * feeBps + BPS - 1n) / BPS;
  const cap = (quote * maxFeeBps) / BPS;
  return scheduled < cap ? scheduled : cap;
}

/** Quote amount and fees of a fill, as LibOrder.settlementAmounts computes them. */
function settlementAmounts(baseAmount, price, buyerFeeBps, buyerMaxFeeBps, sellerFeeBps, sellerMaxFeeBps) {
  const quote = quoteAmount(baseAmount, price);
  return {
    quote,
    buyerFee: fee(quote, buyerFeeBps, buyerMaxFeeBps),
    sellerFee: fee(quote, sellerFeeBps, sellerMaxFeeBps),
  };
}

/** A small deterministic PRNG (mulberry32) so property tests replay from their seed. */
function prng(seed) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    /** Integer in [lo, hi] (BigInt bounds), roughly log-uniform when `logScale`. */
    bigint(lo, hi, logScale = false) {
      if (logScale) {
        const digits = BigInt(hi).toString().length;
        const magnitude = 10n ** BigInt(Math.floor(next() * digits));
        const value = BigInt(Math.floor(next() * 1e15)) * magnitude / 1_000_000_000_000_000n + lo;
        return value > hi ? hi : value;
      }
      const span = hi - lo + 1n;
      const value = (BigInt(Math.floor(next() * 2 ** 53)) * span) / 2n ** 53n;
      return lo + value;
    },
    int(lo, hi) {
      return lo + Math.floor(next() * (hi - lo + 1));
    },
    pick(items) {
      return items[Math.floor(next() * items.length)];
    },
    chance(probability) {
      return next() < probability;
    },
  };
}

module.exports = {
  Side,
  SkipReason,
  PRICE_SCALE,
  BPS,
  ORDER_TYPES,
  WITHDRAWAL_TYPES,
  FAR_EXPIRY,
  domainOf,
  newOrder,
  signOrder,
  orderHash,
  signAll,
  settleSigned,
  vaultEvents,
  newFill,
  authoriseWithdrawal,
  quoteAmount,
  fee,
  settlementAmounts,
  prng,
};
