// Device Merkle trees in JavaScript, the same construction as
// exchange/licenses/merkle.py and DeviceLicenses (leafHash and its proof check):
//
//   leaf(i)  = keccak256(keccak256(abi.encode(uint256 i, bytes32 deviceIdHash)))
//   node     = keccak256(left ‖ right)                   (positional: no sorting)
//
// Level 0 holds the leaves in index order; each level pairs neighbours
// (0, 1), (2, 3), …, and an odd node at the end of a level moves up unchanged
// (its proof skips that level). A proof is the siblings from the leaf upwards,
// without flags: the device's index and the batch's device count say, level by
// level, whether the node is a left or a right child or moves up alone, so a
// proof fits one position in a tree of one size and must be used up exactly.
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

/** The parent of a left and a right node, in that order. */
function hashPair(left, right) {
  return ethers.keccak256(ethers.concat([left, right]));
}

/**
 * The parent under the former sorted-pair construction (OpenZeppelin MerkleProof):
 * kept only to build the trees an attacker would build for it.
 */
function sortedHashPair(a, b) {
  return a.toLowerCase() < b.toLowerCase() ? hashPair(a, b) : hashPair(b, a);
}

/** A tree over already hashed `leaves` (node i of level 0 is leaves[i]), pairing with `pair`. */
function treeOfLeaves(leaves, pair = hashPair) {
  if (leaves.length === 0) throw new Error("a tree needs at least one device");
  const levels = [leaves.map((leaf) => leaf.toLowerCase())];
  while (levels[levels.length - 1].length > 1) {
    const below = levels[levels.length - 1];
    const above = [];
    for (let i = 0; i + 1 < below.length; i += 2) above.push(pair(below[i], below[i + 1]));
    if (below.length % 2 === 1) above.push(below[below.length - 1]);
    levels.push(above);
  }
  return {
    root: levels[levels.length - 1][0],
    count: leaves.length,
    levels,
    leaf: (index) => levels[0][index],
    proof(index) {
      if (index < 0 || index >= leaves.length) throw new Error(`no device ${index}`);
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

/** A tree over `idHashes` (device i has index i): {root, count, levels, proof(index), leaf(index)}. */
function buildTree(idHashes) {
  return treeOfLeaves(idHashes.map((idHash, index) => leafHash(index, idHash)));
}

/**
 * The root `proof` leads to from `leaf` at position `index` of a tree of `count`
 * leaves, or null if the proof is too short or too long for that position (the
 * rule DeviceLicenses verifies with).
 */
function rootFromProof(leaf, index, count, proof) {
  let node = leaf;
  let used = 0;
  let position = BigInt(index);
  let size = BigInt(count);
  while (size > 1n) {
    if (position !== size - 1n || size % 2n === 0n) {
      if (used === proof.length) return null;
      const sibling = proof[used];
      used += 1;
      node = position % 2n === 0n ? hashPair(node, sibling) : hashPair(sibling, node);
    }
    position >>= 1n;
    size = (size + 1n) >> 1n;
  }
  return used === proof.length ? node.toLowerCase() : null;
}

module.exports = { deviceIdHash, leafHash, hashPair, sortedHashPair, treeOfLeaves, buildTree, rootFromProof };
