// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";

/// @title One ERC-721 token per device: the baseline that batch registration is measured against.
/// @notice Benchmark only. Token ids are the devices' id hashes; anyone may mint.
contract DeviceNFT is ERC721 {
    constructor() ERC721("Device licence", "DEVICE") {}

    /// @notice Mint one token per device id hash to `to`, in one transaction.
    /// @param to The manufacturer.
    /// @param deviceIdHashes keccak256 of each device's canonical id.
    function mintDevices(address to, bytes32[] calldata deviceIdHashes) external {
        uint256 count = deviceIdHashes.length;
        for (uint256 i = 0; i < count; ++i) {
            _mint(to, uint256(deviceIdHashes[i]));
        }
    }
}
