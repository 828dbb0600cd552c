// Device Merkle trees in JavaScript, the same construction as
// exchange/licenses/merkle.py and DeviceLicenses.leafHash:
//
//   leaf(i)  = keccak256(keccak256(abi.encode(uint256 i, bytes32 deviceIdHash)))
//   node     = keccak256(min(a, b) ‖ max(a, b))          (OpenZeppelin MerkleProof)
//
// Level 0 holds the leaves in index order; each level pairs neighbours, and an
// odd node at the end of a level moves up unchanged (its proof skips that level).
const { ethers } = require("hardhat");

const coder = ethers.AbiCoder.defaultAbiCoder();

/** keccak256 of a device's canonical id string (the on-chain deviceIdHash). */
function deviceIdHash(canonical) {
  return ethers.keccak256(ethers.toUtf8Bytes(canonical));
}

/** The leaf of device `index` with id hash `idHash`. */
function leafHash(index, idHash) {
  return ethers.keccak256(ethers.keccak256(coder.encode(["uint256", "bytes32"], [index, idHash])));
}

/** Hash two nodes in sorted order (hex strings of equal length compare like the numbers). */
function hashPair(a, b) {
  return a < b ? ethers.keccak256(ethers.concat([a, b])) : ethers.keccak256(ethers.concat([b, a]));
}

/** A tree over `idHashes` (device i has index i): {root, count, proof(index), leaf(index)}. */
function buildTree(idHashes) {
  if (idHashes.length === 0) throw new Error("a tree needs at least one device");
  const levels = [idHashes.map((idHash, index) => leafHash(index, idHash).toLowerCase())];
  while (levels[levels.length - 1].length > 1) {
    const below = levels[levels.length - 1];
    const above = [];
    for (let i = 0; i + 1 < below.length; i += 2) above.push(hashPair(below[i], below[i + 1]));
    if (below.length % 2 === 1) above.push(below[below.length - 1]);
    levels.push(above);
  }
  return {
    root: levels[levels.length - 1][0],
    count: idHashes.length,
    levels,
    leaf: (index) => levels[0][index],
    proof(index) {
      if (index < 0 || index >= idHashes.length) throw new Error(`no device ${index}`);
      const siblings = [];
      let position = index;
      for (const level of levels.slice(0, -1)) {
        const sibling = position ^ 1;
        if (sibling < level.length) siblings.push(level[sibling]);
        position >>= 1;
      }
      return siblings;
    },
  };
}

/** Recompute the root from a leaf and its proof (what MerkleProof.verify does). */
function rootFromProof(leaf, proof) {
  return proof.reduce((node, sibling) => hashPair(node, sibling), leaf);
}

module.exports = { deviceIdHash, leafHash, hashPair, buildTree, rootFromProof };
