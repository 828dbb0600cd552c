// Measure the pool contracts' gas and record it:
//   npx hardhat run scripts/gas-snapshot.js
// writes gas-snapshot.json (committed; test/GasSnapshot.test.js compares
// against it) and rewrites the table between the README markers
// <!-- gas-table:start --> and <!-- gas-table:end -->. Without the markers
// the README is left alone and the table is printed.
const fs = require("fs");
const path = require("path");
const hre = require("hardhat");
const {
  measureGas,
  formatMarkdownTable,
  START_MARKER,
  END_MARKER,
  replaceBetweenMarkers,
} = require("./lib/gas");

async function main() {
  const root = hre.config.paths.root;
  const snapshot = await measureGas(hre);
  const snapshotPath = path.join(root, "gas-snapshot.json");
  fs.writeFileSync(snapshotPath, `${JSON.stringify(snapshot, null, 2)}\n`);
  console.log(`wrote ${path.relative(root, snapshotPath)}`);

  const table = formatMarkdownTable(snapshot);
  const readmePath = path.join(root, "README.md");
  const readme = fs.existsSync(readmePath) ? fs.readFileSync(readmePath, "utf8") : "";
  const updated = replaceBetweenMarkers(readme, table);
  if (updated === null) {
    console.log(`README.md has no ${START_MARKER} ... ${END_MARKER} section; the table:\n\n${table}`);
    return;
  }
  if (updated !== readme) fs.writeFileSync(readmePath, updated);
  console.log("updated the gas table in README.md");
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
