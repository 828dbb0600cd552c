// Hardhat configuration.
//
// The compiler comes from the npm `solc` package (solc-js) instead of the
// compiler download site, so builds work offline and match the Python
// toolchain byte for byte: both read contracts/compiler.json for the version
// and settings.
require("@nomicfoundation/hardhat-chai-matchers");
require("@nomicfoundation/hardhat-ethers");
const { subtask } = require("hardhat/config");
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require("hardhat/builtin-tasks/task-names");
const compiler = require("./contracts/compiler.json");

subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args, hre, runSuper) => {
  const solc = require("solc");
  const longVersion = solc.version().replace(/\.Emscripten\.clang$/, "");
  if (args.solcVersion !== compiler.version) {
    return runSuper();
  }
  return {
    compilerPath: require.resolve("solc/soljson.js"),
    isSolcJs: true,
    version: args.solcVersion,
    longVersion,
  };
});

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: {
    version: compiler.version,
    settings: compiler.settings,
  },
  networks: {
    hardhat: {
      hardfork: "cancun",
      // Allow the escape-hatch and fee-licence tests to move time freely.
      allowBlocksWithSameTimestamp: true,
    },
  },
  paths: {
    sources: "./contracts",
    tests: "./test",
  },
  mocha: {
    timeout: 120000,
  },
};
