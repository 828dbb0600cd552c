// Gas regression check: re-measures the pool contracts (scripts/lib/gas.js)
// and compares every number exactly with the committed gas-snapshot.json.
// Gas on the Hardhat network is deterministic, so any difference is a real
// change in the contracts, the compiler settings or the measured scenario.
const fs = require("fs");
const path = require("path");
const hre = require("hardhat");
const { expect } = require("chai");
const { takeSnapshot } = require("@nomicfoundation/hardhat-network-helpers");
const { measureGas, compareSnapshots, formatMarkdownTable, betweenMarkers } = require("../scripts/lib/gas");

const SNAPSHOT_PATH = path.join(hre.config.paths.root, "gas-snapshot.json");
const README_PATH = path.join(hre.config.paths.root, "README.md");

describe("Gas snapshot", function () {
  it("matches the committed gas-snapshot.json exactly", async function () {
    expect(fs.existsSync(SNAPSHOT_PATH), "gas-snapshot.json is missing: run `npx hardhat run scripts/gas-snapshot.js`")
      .to.be.true;
    const committed = JSON.parse(fs.readFileSync(SNAPSHOT_PATH, "utf8"));
    const chainState = await takeSnapshot();
    let measured;
    try {
      measured = await measureGas(hre);
    } finally {
      await chainState.restore();
    }
    const differences = compareSnapshots(committed, measured);
    if (differences.length > 0) {
      expect.fail(
        `gas differs from gas-snapshot.json:\n  ${differences.join("\n  ")}\n` +
          "If the change is intended, run `npx hardhat run scripts/gas-snapshot.js` to update " +
          "gas-snapshot.json and the README table, and commit both.",
      );
    }
  });

  it("is the table the README shows", function () {
    const committed = JSON.parse(fs.readFileSync(SNAPSHOT_PATH, "utf8"));
    const shown = betweenMarkers(fs.readFileSync(README_PATH, "utf8"));
    expect(shown, "README.md has no gas table between its markers").to.not.equal(null);
    expect(shown, "the README's gas table differs from gas-snapshot.json: run `npx hardhat run scripts/gas-snapshot.js`")
      .to.equal(formatMarkdownTable(committed).trim());
  });
});
