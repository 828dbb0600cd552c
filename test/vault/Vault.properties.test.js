// Vault properties over seeded random inputs (replayable from the seed in each
// test's title): exact conservation of every fill's quote amount and fees, and
// the custody invariant (per token, the sum of all balances equals the Vault's
// token balance) over random sequences of deposits, settlements, withdrawals
// and exits.
const { ethers } = require("hardhat");
const { expect } = require("chai");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { deployVaultWithTraders, bpc, usd } = require("./fixtures");
const { Side, BPS, newOrder, signAll, newFill, settlementAmounts, authoriseWithdrawal, prng } = require("./orders");

const FEE_SEED = 20_240_611;
const SEQUENCE_SEED = 7_031_989;

/** A random fill: amount, price, fee rates and caps, including the edges. */
function randomTerms(random) {
  const price = random.chance(0.1) ? random.bigint(1n, 10n) : random.bigint(1n, usd(1000), true);
  let amount = random.chance(0.1) ? bpc(random.int(1, 5)) : random.bigint(1n, bpc(5), true);
  if ((amount * price) / 10n ** 18n === 0n) amount = (10n ** 18n + price - 1n) / price; // smallest non-dust fill
  const cap = () => random.pick([0n, BPS, 65_535n, random.bigint(0n, 100n), random.bigint(0n, BPS)]);
  const rateWithin = (maxFeeBps) => {
    const limit = maxFeeBps < BPS ? maxFeeBps : BPS;
    return random.pick([0n, limit, random.bigint(0n, limit)]);
  };
  const makerMaxFeeBps = cap();
  const takerMaxFeeBps = cap();
  return {
    amount,
    price,
    makerMaxFeeBps,
    takerMaxFeeBps,
    makerFeeBps: rateWithin(makerMaxFeeBps),
    takerFeeBps: rateWithin(takerMaxFeeBps),
    makerSells: random.chance(0.5),
  };
}

describe("Vault: properties", function () {
  beforeEach(async function () {
    Object.assign(this, await loadFixture(deployVaultWithTraders));
    this.traders = [this.alice, this.bob, this.carol, this.dave];
    this.tokens = [await this.bpc.getAddress(), await this.quote.getAddress()];
    this.vaultBalances = async (accounts) => {
      const result = new Map();
      for (const account of accounts) {
        result.set(account.address, [
          await this.vault.balanceOf(account.address, this.tokens[0]),
          await this.vault.balanceOf(account.address, this.tokens[1]),
        ]);
      }
      return result;
    };
  });

  it(`conserves value exactly in every fill: buyer pays = seller receives + fees (seed ${FEE_SEED})`, async function () {
    const random = prng(FEE_SEED);
    const fundAddress = await this.fund.getAddress();
    let fundExpected = await this.quote.balanceOf(fundAddress);
    for (let batch = 0; batch < 4; batch++) {
      const entries = [];
      const fills = [];
      const expected = [];
      const deltas = new Map(this.traders.map((trader) => [trader.address, [0n, 0n]]));
      for (let i = 0; i < 40; i++) {
        const terms = randomTerms(random);
        const [maker, taker] = [random.pick(this.traders), random.pick(this.traders)];
        const makerSide = terms.makerSells ? Side.Sell : Side.Buy;
        const takerSide = terms.makerSells ? Side.Buy : Side.Sell;
        const common = { price: terms.price, amount: terms.amount };
        entries.push({ order: await newOrder(this, maker, { ...common, side: makerSide, maxFeeBps: terms.makerMaxFeeBps }), signer: maker });
        entries.push({ order: await newOrder(this, taker, { ...common, side: takerSide, maxFeeBps: terms.takerMaxFeeBps }), signer: taker });
        fills.push(newFill(2 * i, 2 * i + 1, terms.amount, terms.price, terms.makerFeeBps, terms.takerFeeBps));

        const [buyer, seller] = terms.makerSells ? [taker, maker] : [maker, taker];
        const [buyerFeeBps, buyerCap, sellerFeeBps, sellerCap] = terms.makerSells
          ? [terms.takerFeeBps, terms.takerMaxFeeBps, terms.makerFeeBps, terms.makerMaxFeeBps]
          : [terms.makerFeeBps, terms.makerMaxFeeBps, terms.takerFeeBps, terms.takerMaxFeeBps];
        const effective = (cap) => (cap < BPS ? cap : BPS);
        const amounts = settlementAmounts(terms.amount, terms.price, buyerFeeBps, effective(buyerCap), sellerFeeBps, effective(sellerCap));
        // The rule itself: each fee within the exact signed cap, at least the exact scheduled
        // fee unless the cap cut it, and less than one unit above it.
        for (const [charged, rate, cap] of [
          [amounts.buyerFee, buyerFeeBps, effective(buyerCap)],
          [amounts.sellerFee, sellerFeeBps, effective(sellerCap)],
        ]) {
          expect(charged * BPS <= amounts.quote * cap).to.equal(true);
          expect(charged * BPS >= amounts.quote * rate || charged === (amounts.quote * cap) / BPS).to.equal(true);
          expect((charged - 1n) * BPS < amounts.quote * rate || charged === 0n).to.equal(true);
        }
        expect(amounts.sellerFee <= amounts.quote).to.equal(true);
        expected.push({ buyer, seller, ...amounts });
        const buyerDelta = deltas.get(buyer.address);
        buyerDelta[0] += terms.amount;
        buyerDelta[1] -= amounts.quote + amounts.buyerFee;
        const sellerDelta = deltas.get(seller.address);
        sellerDelta[0] -= terms.amount;
        sellerDelta[1] += amounts.quote - amounts.sellerFee;
      }
      const before = await this.vaultBalances(this.traders);
      const vaultQuoteBefore = await this.quote.balanceOf(await this.vault.getAddress());
      const { orders, signatures } = await signAll(this.vault, entries);
      const receipt = await (await this.vault.connect(this.operator).settle(orders, signatures, fills)).wait();

      const trades = receipt.logs
        .filter((log) => log.address === this.vault.target)
        .map((log) => this.vault.interface.parseLog(log))
        .filter((event) => event.name === "Trade");
      expect(trades.length).to.equal(fills.length);
      let fees = 0n;
      for (const [index, trade] of trades.entries()) {
        const want = expected[index];
        expect([trade.args.buyer, trade.args.seller, trade.args.quoteAmount, trade.args.buyerFee, trade.args.sellerFee]).to.deep.equal([
          want.buyer.address,
          want.seller.address,
          want.quote,
          want.buyerFee,
          want.sellerFee,
        ]);
        fees += want.buyerFee + want.sellerFee;
      }
      const after = await this.vaultBalances(this.traders);
      let baseSum = 0n;
      let quoteSum = 0n;
      for (const trader of this.traders) {
        const [base0, quote0] = before.get(trader.address);
        const [base1, quote1] = after.get(trader.address);
        expect([base1 - base0, quote1 - quote0]).to.deep.equal(deltas.get(trader.address));
        baseSum += base1 - base0;
        quoteSum += quote1 - quote0;
      }
      fundExpected += fees;
      expect(baseSum).to.equal(0n);
      expect(quoteSum + fees).to.equal(0n);
      expect(await this.quote.balanceOf(fundAddress)).to.equal(fundExpected);
      expect(await this.quote.balanceOf(await this.vault.getAddress())).to.equal(vaultQuoteBefore - fees);
    }
  });

  it(`keeps the sum of balances equal to the Vault's holdings over random operations (seed ${SEQUENCE_SEED})`, async function () {
    const random = prng(SEQUENCE_SEED);
    const accounts = [...this.traders, this.outsider];
    const vaultAddress = await this.vault.getAddress();
    const tokenContracts = [this.bpc, this.quote];
    let withdrawalNonce = 0n;
    const counts = { deposit: 0, withdraw: 0, settle: 0, refused: 0, exit: 0 };

    const checkInvariant = async () => {
      const balances = await this.vaultBalances(accounts);
      for (const [index, token] of tokenContracts.entries()) {
        let sum = 0n;
        for (const pair of balances.values()) sum += pair[index];
        expect(sum).to.equal(await token.balanceOf(vaultAddress));
      }
      return balances;
    };

    const randomSettlement = async (balances) => {
      const entries = [];
      const fills = [];
      for (let i = 0; i < random.int(1, 4); i++) {
        const seller = random.pick(this.traders);
        const buyer = random.pick(this.traders.filter((trader) => trader !== seller));
        const price = random.bigint(1n, usd(500), true);
        const [sellerBase] = balances.get(seller.address);
        const [, buyerQuote] = balances.get(buyer.address);
        // Mostly affordable fills; sometimes one that overdraws on purpose.
        const overdraw = random.chance(0.15);
        let amount = overdraw ? sellerBase + 1n : random.bigint(1n, sellerBase / 4n + 1n, true);
        if (!overdraw && (amount * price) / 10n ** 18n * 2n > buyerQuote) amount = 10n ** 18n / price + 1n;
        if ((amount * price) / 10n ** 18n === 0n) amount = 10n ** 18n / price + 1n;
        const fee = random.bigint(0n, 50n);
        entries.push({ order: await newOrder(this, seller, { side: Side.Sell, price, amount, maxFeeBps: 50n }), signer: seller });
        entries.push({ order: await newOrder(this, buyer, { side: Side.Buy, price, amount, maxFeeBps: 50n }), signer: buyer });
        fills.push(newFill(2 * i, 2 * i + 1, amount, price, fee, fee));
      }
      const { orders, signatures } = await signAll(this.vault, entries);
      try {
        await (await this.vault.connect(this.operator).settle(orders, signatures, fills)).wait();
        counts.settle++;
      } catch (error) {
        expect(error.message).to.match(/VaultInsufficientBalance|SafeCastOverflowedUintDowncast/);
        counts.refused++;
      }
    };

    await checkInvariant();
    for (let step = 0; step < 60; step++) {
      const balances = await checkInvariant();
      const account = random.pick(accounts);
      const tokenIndex = random.int(0, 1);
      const action = random.pick(["deposit", "withdraw", "settle", "settle", "settle", "exit"]);
      if (action === "deposit") {
        const amount = random.bigint(1n, tokenIndex === 0 ? bpc(50) : usd(5000), true);
        await this.vault.connect(account).deposit(this.tokens[tokenIndex], amount);
        counts.deposit++;
      } else if (action === "withdraw") {
        const balance = balances.get(account.address)[tokenIndex];
        if (balance === 0n) continue;
        const auth = await authoriseWithdrawal(this.vault, this.operator, {
          account: account.address,
          token: this.tokens[tokenIndex],
          amount: random.bigint(1n, balance, true),
          nonce: withdrawalNonce++,
        });
        await this.vault.connect(account).withdraw(auth.token, auth.amount, auth.nonce, auth.expiry, auth.signature);
        counts.withdraw++;
      } else if (action === "settle") {
        await randomSettlement(balances);
      } else {
        await this.vault.connect(account).requestExit();
        await time.increase(await this.vault.exitDelay());
        await this.vault.connect(account).exit();
        await this.vault.connect(account).cancelExit();
        counts.exit++;
        // Give the account something to trade with again.
        await this.vault.connect(account).deposit(this.tokens[0], bpc(100));
        await this.vault.connect(account).deposit(this.tokens[1], usd(10_000));
      }
    }
    await checkInvariant();
    // The sequence really exercised every kind of operation.
    for (const kind of Object.keys(counts)) expect(counts[kind], kind).to.be.greaterThan(0);
  });
});
