// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @title LibOrder
/// @notice Signed orders of the Vault: the EIP-712 type, its struct hash, and the
/// price and fee arithmetic of a fill. Pure; the Vault holds all state.
/// @dev Price convention. `price` is the number of quote-token base units paid
/// for PRICE_SCALE (1e18) base-token base units, i.e. for one whole BPC (18
/// decimals). A fill of `baseAmount` at `price` moves
///
///     quote = floor(baseAmount * price / 1e18)
///
/// quote units from the buyer to the seller (rounded down: the payer never pays
/// more than the price says). Each side also pays a fee in the quote token,
/// computed from the fill's fee rate `feeBps` and bounded by the order's signed
/// cap `maxFeeBps` (itself at most BPS, 100 %):
///
///     fee = min(ceil(quote * feeBps / 10_000), floor(quote * maxFeeBps / 10_000))
///
/// The scheduled fee rounds up, in the Fund's favour, unless that would take it
/// past the exact cap, which the signer agreed to and which is never exceeded.
/// The buyer pays quote + buyerFee, the seller receives quote - sellerFee, the
/// Fund receives buyerFee + sellerFee: what the buyer pays is exactly what the
/// seller and the Fund receive, so no fill creates or destroys value.
/// The Python mirror is `exchange/trading/amounts.py`; change both together.
library LibOrder {
    /// @notice The side of an order (EIP-712 type `uint8`: Buy = 0, Sell = 1).
    enum Side {
        Buy,
        Sell
    }

    /// @notice A limit order, signed by `maker` as EIP-712 typed data.
    /// @dev Field order is the EIP-712 type's order; the struct is only ever in
    /// calldata or memory, never in storage.
    struct Order {
        address maker;
        address baseToken;
        address quoteToken;
        Side side;
        uint256 price;
        uint256 amount;
        uint16 maxFeeBps;
        uint64 nonce;
        uint64 expiry;
    }

    /// @notice The quote-token amounts a fill moves.
    struct Amounts {
        uint256 quote;
        uint256 buyerFee;
        uint256 sellerFee;
    }

    /// @notice Base units priced by `price`: one whole 18-decimal token.
    uint256 internal constant PRICE_SCALE = 1e18;
    /// @notice Basis points in 100 %.
    uint256 internal constant BPS = 10_000;

    /// @notice keccak256 of the EIP-712 type string of an order.
    /// @dev Hashed at compile time: the long string never reaches the bytecode.
    // solhint-disable-next-line gas-small-strings
    bytes32 internal constant ORDER_TYPEHASH = keccak256(
        "Order(address maker,address baseToken,address quoteToken,uint8 side,uint256 price,uint256 amount,"
        "uint16 maxFeeBps,uint64 nonce,uint64 expiry)"
    );

    /// @notice The EIP-712 struct hash of `order` (to be wrapped in the Vault's domain).
    /// @dev Equal to keccak256(abi.encode(ORDER_TYPEHASH, order)): every field is
    /// static, so the struct's calldata is already the concatenation of its 32-byte
    /// field encodings that EIP-712 `encodeData` requires. Hashing the calldata words
    /// directly (as 0x's LibNativeOrder does) skips Solidity's per-field copy and
    /// validation, about 1,000 gas per order. A word with dirty high bits hashes to a
    /// digest no EIP-712 signer produces, and reading that field later reverts anyway.
    /// @param order The order.
    /// @return result The struct hash.
    function hash(Order calldata order) internal pure returns (bytes32 result) {
        bytes32 typeHash = ORDER_TYPEHASH;
        // solhint-disable-next-line no-inline-assembly
        assembly ("memory-safe") {
            // Scratch use of free memory; the free memory pointer is left as it was.
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            calldatacopy(add(ptr, 0x20), order, 0x120)
            result := keccak256(ptr, 0x140)
        }
    }

    /// @notice The quote amount of a fill: floor(baseAmount * price / PRICE_SCALE).
    /// @param baseAmount Base-token base units traded.
    /// @param price Quote base units per PRICE_SCALE base units.
    /// @return The quote base units the buyer pays the seller, before fees.
    function quoteAmount(uint256 baseAmount, uint256 price) internal pure returns (uint256) {
        return (baseAmount * price) / PRICE_SCALE;
    }

    /// @notice The fee on `quote`: the scheduled rate rounded up, capped at the exact signed cap.
    /// @param quote The quote amount of the fill.
    /// @param feeBps The fee rate the operator applies (must not exceed `maxFeeBps`).
    /// @param maxFeeBps The order's signed fee cap (at most BPS).
    /// @return The fee in quote base units; never more than quote * maxFeeBps / BPS.
    function fee(uint256 quote, uint256 feeBps, uint256 maxFeeBps) internal pure returns (uint256) {
        // unchecked: quote = baseAmount * price / 1e18 < 2^196, and the Vault passes rates
        // of at most 65,535 (< 2^16), so neither product can reach 2^256.
        unchecked {
            uint256 scheduled = Math.ceilDiv(quote * feeBps, BPS);
            uint256 cap = (quote * maxFeeBps) / BPS;
            return Math.min(scheduled, cap);
        }
    }

    /// @notice Every quote-token amount of a fill.
    /// @dev Fee rates above their cap, or caps above BPS, are the caller's to reject:
    /// with both at most BPS each fee is at most `quote`, so the seller's
    /// `quote - sellerFee` cannot underflow.
    /// @param baseAmount Base units traded.
    /// @param price The fill price.
    /// @param buyerFeeBps The buyer's fee rate.
    /// @param buyerMaxFeeBps The buyer order's fee cap.
    /// @param sellerFeeBps The seller's fee rate.
    /// @param sellerMaxFeeBps The seller order's fee cap.
    /// @return amounts The quote amount and both fees.
    function settlementAmounts(
        uint256 baseAmount,
        uint256 price,
        uint256 buyerFeeBps,
        uint256 buyerMaxFeeBps,
        uint256 sellerFeeBps,
        uint256 sellerMaxFeeBps
    ) internal pure returns (Amounts memory amounts) {
        amounts.quote = quoteAmount(baseAmount, price);
        amounts.buyerFee = fee(amounts.quote, buyerFeeBps, buyerMaxFeeBps);
        amounts.sellerFee = fee(amounts.quote, sellerFeeBps, sellerMaxFeeBps);
    }
}
