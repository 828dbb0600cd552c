// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ERC1271Wallet} from "./ERC1271Wallet.sol";

/// @title ERC1271MalformedWallet
/// @notice A contract wallet for tests whose `isValidSignature` never gives the answer ERC-1271
/// requires (32 bytes holding the function's selector, the rest zero): it reverts, returns the
/// selector alone (4 bytes), or returns the selector followed by junk in the rest of the word.
/// Its owner makes it act as `ERC1271Wallet`'s does, so that it can deposit.
contract ERC1271MalformedWallet is ERC1271Wallet {
    /// @notice How the wallet answers.
    enum Answer {
        Revert,
        SelectorOnly,
        SelectorAndJunk
    }

    /// @notice The wallet's answer to every `isValidSignature`.
    Answer public immutable answer;

    /// @notice The wallet's `isValidSignature` reverted (`Answer.Revert`).
    error ERC1271MalformedWalletReverted();

    /// @param walletOwner The owner's address.
    /// @param walletAnswer How `isValidSignature` answers.
    constructor(address walletOwner, Answer walletAnswer) ERC1271Wallet(walletOwner) {
        answer = walletAnswer;
    }

    /// @inheritdoc IERC1271
    function isValidSignature(bytes32, bytes calldata) external view override returns (bytes4) {
        Answer given = answer;
        if (given == Answer.Revert) revert ERC1271MalformedWalletReverted();
        bytes4 selector = IERC1271.isValidSignature.selector;
        uint256 length = given == Answer.SelectorOnly ? 4 : 32;
        // solhint-disable-next-line no-inline-assembly
        assembly ("memory-safe") {
            mstore(0x00, selector)
            // The low 28 bytes of the word, which a well-formed bytes4 leaves zero.
            mstore(0x04, 0xdeadbeef00000000000000000000000000000000000000000000000000000000)
            return(0x00, length)
        }
    }
}
