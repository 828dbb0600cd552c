// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {TestToken} from "./TestToken.sol";

/// @title ReturnDataToken
/// @notice A token for tests whose `transfer` answers in one of the shapes tokens in the wild
/// use, to test how a caller reads the answer: `true`, nothing (USDT), `false` without moving
/// anything, `true` followed by more data, or a revert with a long reason.
contract ReturnDataToken is TestToken {
    /// @notice The shapes of answer `transfer` can give.
    enum Mode {
        ReturnTrue,
        ReturnNothing,
        ReturnFalse,
        ReturnTrueAndMore,
        RevertWithLargeData
    }

    /// @notice How `transfer` answers.
    Mode public mode;

    /// @param name_ The token's name.
    /// @param symbol_ The token's symbol.
    constructor(string memory name_, string memory symbol_) TestToken(name_, symbol_, 18) {}

    /// @notice Set how `transfer` answers.
    /// @param newMode The shape of answer.
    function setMode(Mode newMode) external {
        mode = newMode;
    }

    /// @notice Transfer, answering as `mode` says; `ReturnFalse` and `RevertWithLargeData` move nothing.
    /// @param to The receiver.
    /// @param value Base units.
    /// @return Whether the transfer was made, in the modes that answer with a boolean.
    function transfer(address to, uint256 value) public override returns (bool) {
        Mode current = mode;
        if (current == Mode.RevertWithLargeData) {
            bytes memory reason = new bytes(4096);
            // solhint-disable-next-line no-inline-assembly
            assembly ("memory-safe") {
                revert(add(reason, 0x20), mload(reason))
            }
        }
        if (current == Mode.ReturnFalse) return false;
        _transfer(msg.sender, to, value);
        if (current == Mode.ReturnNothing) {
            // solhint-disable-next-line no-inline-assembly
            assembly ("memory-safe") {
                return(0x00, 0x00)
            }
        }
        if (current == Mode.ReturnTrueAndMore) {
            // solhint-disable-next-line no-inline-assembly
            assembly ("memory-safe") {
                mstore(0x00, 1)
                mstore(0x20, 0xdead)
                return(0x00, 0x40)
            }
        }
        return true;
    }
}
