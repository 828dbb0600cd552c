// Numeric values of the pool contracts' Solidity enums, as the ABI encodes them.
// Keep in the order of the declarations in contracts/interfaces/IPoolRegistry.sol
// and contracts/interfaces/IBPR.sol.

/** IPoolRegistry.Tier: enterprise-size tiers; NonProfit members are licensed free. */
const Tier = Object.freeze({ NonProfit: 0, Small: 1, Medium: 2, Large: 3 });

/** IPoolRegistry.Status: None means never admitted; Expelled is final. */
const Status = Object.freeze({ None: 0, Active: 1, Suspended: 2, Expelled: 3 });

/** IBPR.LicenceKind: how a licence was obtained (None: no licence). */
const LicenceKind = Object.freeze({ None: 0, Locked: 1, NonProfit: 2, Fee: 3 });

module.exports = { Tier, Status, LicenceKind };
